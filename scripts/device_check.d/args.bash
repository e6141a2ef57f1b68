# Sourced by each family script (`source "$(dirname "$0")/args.bash" "$@"`): parses `[--dry-run] --device
# cuda|cpu` into DRY and DEVICE, and picks the interpreter PY ($PY, else device_check.sh's $PYTHON, else
# python3: the lent image has no `python`). Not a family script itself (device_check.sh runs *.sh only).
set -euo pipefail
DRY=0; DEVICE=cuda
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --device) DEVICE="$2"; shift ;;
        *) echo "$(basename "$0"): unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
PY=${PY:-${PYTHON:-python3}}
