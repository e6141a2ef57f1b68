"""OpenCL regressions that need a fresh process (PoCL reads its settings once, at start-up)."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("pyopencl", reason="the OpenCL backend needs pyopencl (pip install 'tilekit[opencl]')")

TESTS = Path(__file__).resolve().parent


def test_branch_results_survive_a_barrier_join_under_pinned_threads(tmp_path):
    """A runtime `if` whose branches stage through shared memory, then an epilogue on the branch result.
    Before the join barrier, PoCL with pinned worker threads got whole work-groups wrong every time."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(TESTS)!r})
        import corpus
        rng = torch.Generator().manual_seed(449)
        args = corpus.CASES_BY_NAME["matmul_epilogue"].make_inputs(rng, (41, 15, 65), torch.float16, 0)
        want = torch.relu(corpus._matmul_ref(args)[0])
        for _ in range(5):
            C = torch.full_like(args["C"], float("nan"))
            corpus.matmul_epilogue[(3, 5)](args["A"], args["B"], args["Bias"], C, args["has_bias"],
                                           BM=16, BN=16, BK=64, ACT="relu", backend="opencl")
            err = (C.double() - want).abs().max().item()
            assert err < 0.05, err
        print("ok")
    """))
    env = {**os.environ, "POCL_AFFINITY": "1", "TILEKIT_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]
