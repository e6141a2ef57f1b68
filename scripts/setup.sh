#!/usr/bin/env bash
# Installs everything tilekit needs on this machine: Python packages (pip) and, as root, hipcc and
# PostgreSQL (apt).
# Safe to run again: each step is skipped when its tool is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# torch: keep a torch that is already installed (a GPU user's CUDA build); otherwise take the pinned
# CPU build, which an unpinned install would replace with a multi-GB CUDA build.
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install -q "torch==2.13.0"
fi

"$PY" -m pip install -q -e ".[test,opencl,nvrtc,tune]"

# hipcc (clang for AMD GPUs) comes from Debian, not PyPI. Compiling HIP needs it; nothing else does.
if ! command -v hipcc >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends hipcc libamdhip64-dev rocm-device-libs >/dev/null
    else
        echo "setup: hipcc not found and cannot apt-get it (not root); HIP compile tests will be skipped" >&2
    fi
fi
# PostgreSQL: `tilekit tune --storage postgresql://...` shares studies between machines; the tests start a
# throwaway server with initdb/pg_ctl (tests/test_tune_postgres.py). The driver comes with the `tune` extra.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    else
        echo "setup: PostgreSQL not found and cannot apt-get it (not root); the PostgreSQL tuner test will be skipped" >&2
    fi
fi
echo "setup: done"
