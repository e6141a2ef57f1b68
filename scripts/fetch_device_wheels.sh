#!/usr/bin/env bash
# Downloads the pure-Python wheels that the lent GPU image lacks (optuna and its needs, filelock) for
# Python 3.12 into .whl/ (git-ignored through .git/info/exclude), for scripts/device_check.sh to install
# offline there. Carry `.whl` in the device run. Versions: the ones tested here.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-common-dir)/info/exclude"
PY=${PYTHON:-python3}
mkdir -p .whl
for spec in optuna==5.0.0 alembic==1.20.1 sqlalchemy==2.1.9 colorlog==6.12.0 tqdm==4.70.1 mako==1.4.3 pyyaml==6.0.3 filelock==4.3.1; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d .whl "$spec"
done
ls -la .whl
