"""bench/problems/attention/varlen.py and its tilekit candidate agree at the quick sizes (fp32 and bf16, on
the reference backend), the problem's reference matches the float64 per-sequence oracle, and the candidate
passes the static anti-cheat check."""
import warnings

import pytest
import torch

import tilekit.ops as tk_ops
from tilekit.bench.anticheat import check_candidate_file
from tilekit.bench.discovery import TILEKIT_CANDIDATES_DIR, TILEKIT_PROBLEMS_DIR
from tilekit.bench.worker import apply_overrides, load_module
from tilekit.ops.attention.op import attention_reference
from tilekit.tolerances import assert_close, op_table

warnings.filterwarnings("ignore", message=".*no dispatch table.*")
TABLE = op_table("attention", "PROPERTY")


def _load(root, name, **overrides):
    module = load_module(str(root / "attention" / "varlen.py"), name)
    apply_overrides(module, overrides)
    return module


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_varlen_problem_and_candidate_agree(dtype):
    problem = _load(TILEKIT_PROBLEMS_DIR, "problem", **{**problem_quick(), "DTYPE": dtype})
    candidate = _load(TILEKIT_CANDIDATES_DIR, "candidate")
    q, k, v, cu = problem.get_inputs()
    assert cu.dtype == torch.int32 and int(cu[-1]) == q.shape[0] and int((cu[1:] - cu[:-1]).min()) == 1
    want = problem.Model(*problem.get_init_inputs())(q, k, v, cu)
    group = q.shape[1] // k.shape[1]
    for b in range(cu.shape[0] - 1):  # the problem's reference is attention, sequence by sequence
        s, e = int(cu[b]), int(cu[b + 1])
        alone = attention_reference(*(t[s:e].transpose(0, 1)[None].double() for t in (q, k, v)), causal=True)
        assert_close(want[s:e], alone[0].transpose(0, 1), dtype=q.dtype, table=TABLE)
    with tk_ops.use_backend("reference"):
        got = candidate.ModelNew(*problem.get_init_inputs())(q, k, v, cu)
    assert group > 1 and got.shape == want.shape and got.dtype == want.dtype
    assert_close(got, want.double(), dtype=q.dtype, table=TABLE)


def problem_quick():
    return _load(TILEKIT_PROBLEMS_DIR, "quick").QUICK


def test_varlen_candidate_passes_the_anticheat_check():
    assert check_candidate_file(TILEKIT_CANDIDATES_DIR / "attention" / "varlen.py", require_tilekit_op=True) == []
