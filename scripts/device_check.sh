#!/usr/bin/env bash
# The checks to run when a GPU machine is lent (the `device` tool): offline, on the image's own python3.
#
#   scripts/device_check.sh [--budget-s 420] [--device cuda|cpu] [--dry-run]
#
# Steps, in priority order, each under `timeout` within what is left of --budget-s, each writing
# $OUT/<step>.json ({"step", "rc", "wall_s", "command", "tail"}) as soon as it ends; a failed step does not
# stop the next. At most 8 files come back from the device, so there are at most 8 steps:
#   1 gpu_tests    the GPU-marked tests
#   2 tune_matmul  `tilekit tune matmul` with <= 20 trials
#   3 bench        one bench run over every problem family (one trial, no torch.compile)
#   4 family_<f>   the scripts in scripts/device_check.d/<family>.sh that the op issues add (at most 5)
# --dry-run: tiny sizes on --device (cpu in CI), the same steps, so the script is proven before device time
# is spent. Missing pure-Python wheels (optuna and its needs, filelock) travel in .whl/ (scripts/
# fetch_device_wheels.sh downloads them); tilekit itself is put on PYTHONPATH, never pip-installed with deps.
set -uo pipefail
cd "$(dirname "$0")/.."
BUDGET=420
DEVICE=cuda
DRY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --budget-s) BUDGET=$2; shift 2 ;;
        --device) DEVICE=$2; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        *) echo "device_check: unknown argument $1" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && ! "$PY" -c "import optuna, filelock" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/tk-site .whl/*.whl \
        && export PYTHONPATH=/tmp/tk-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export TILEKIT_CACHE_DIR=${TILEKIT_CACHE_DIR:-$OUT/../tk-cache}
START=$(date +%s)

step() {  # step NAME CMD...: run CMD under the budget left, then write $OUT/NAME.json
    local name=$1; shift
    local left=$(( BUDGET - ($(date +%s) - START) ))
    local log; log=$(mktemp)
    local t0; t0=$(date +%s.%N)
    local rc
    if [ "$left" -le 5 ]; then
        echo "no budget left" >"$log"; rc=124
    else
        timeout --kill-after=5 "$left" "$@" >"$log" 2>&1; rc=$?
    fi
    local t1; t1=$(date +%s.%N)
    "$PY" - "$OUT/$name.json" "$name" "$rc" "$t0" "$t1" "$log" "$*" <<'PYEOF'
import json, sys
path, name, rc, t0, t1, log, cmd = sys.argv[1:]
tail = open(log, errors="replace").read()[-6000:]
json.dump({"step": name, "rc": int(rc), "wall_s": round(float(t1) - float(t0), 2), "command": cmd, "tail": tail},
          open(path, "w"), indent=1)
PYEOF
    echo "device_check: $name rc=$rc ($(tail -n 1 "$log" | cut -c1-160))"
    rm -f "$log"
}

if [ "$DRY" = 1 ]; then
    step gpu_tests "$PY" -m pytest -q -p no:cacheprovider -m gpu --co tests/test_aot.py tests/test_nvrtc_compile.py
    step tune_matmul "$PY" -m tilekit.cli tune matmul --backend reference --shapes 24,16,8 --trials 2 \
        --space BM=16 BN=16 BK=16 num_warps=2 num_stages=1 --repeats 2
else
    step gpu_tests "$PY" -m pytest -q -p no:cacheprovider -m gpu tests
    step tune_matmul "$PY" -m tilekit.cli tune matmul --backend triton --shapes 4096,4096,4096 --trials 20 --time-budget 150
fi
# One bench step over every problem family (one trial each, no torch.compile): with the 2 steps above and one
# file per family script below, 7 files, under the 8 that come back.
if [ "$DRY" = 1 ]; then  # the dry run proves the bench step on one family, to stay cheap in CI
    step bench "$PY" -m tilekit.cli bench --problems matmul --device "$DEVICE" --quick --trials 1 \
        --no-compile --no-progress --cpu-budget 30 --out-dir "$OUT/../bench_out"
else
    step bench "$PY" -m tilekit.cli bench --problems matmul,softmax,attention,moe,lowbit_linear,selective_scan \
        --device "$DEVICE" --trials 1 --no-compile --no-progress --out-dir "$OUT/../bench_out"
fi
for extra in scripts/device_check.d/*.sh; do
    [ -e "$extra" ] || continue
    fam=$(basename "$extra" .sh)
    step "family_$fam" bash "$extra" $([ "$DRY" = 1 ] && echo --dry-run) --device "$DEVICE"
done
echo "device_check: results in $OUT ($(ls "$OUT" | wc -l) files)"
