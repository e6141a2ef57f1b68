"""The SSM family's bench problems (bench/problems/selective_scan/ssd_*.py): their PyTorch reference Models
against a float64 sequential recurrence written here, at ragged quick sizes, and the tilekit candidates against
those Models on the reference backend."""
import importlib.util
import pathlib

import pytest
import torch

from tilekit.ops import use_backend
from tilekit.tolerances import assert_close, op_table

ROOT = pathlib.Path(__file__).resolve().parents[3] / "bench"
FORWARD = op_table("ssm", "FORWARD")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def load(kind, name, **sizes):
    spec = importlib.util.spec_from_file_location(f"ssm_bench_{kind}_{name}", ROOT / kind / "selective_scan" /
                                                  f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for key, value in sizes.items():
        setattr(module, key, value)
    return module


def recurrence(state, x, dt, A, B, C, D, dt_bias):
    """float64 s_t = exp(dt_t A) s_{t-1} + dt_t x_t B_t^T, y_t = s_t C_t + D x_t over (Bt, L, H, P)."""
    f = torch.float64
    per_group = x.shape[2] // B.shape[2]
    dt = torch.nn.functional.softplus(dt.to(f) + dt_bias.to(f))
    Bh, Ch = (t.to(f).repeat_interleave(per_group, 2) for t in (B, C))
    ys = []
    for t in range(x.shape[1]):
        state = torch.exp(dt[:, t] * A.to(f))[..., None, None] * state + \
            (dt[:, t, :, None] * x[:, t].to(f))[..., None] * Bh[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ch[:, t]))
    return torch.stack(ys, 1) + x.to(f) * D.to(f)[:, None], state


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_ssd_chunk_scan_problem_and_candidate(dtype):
    sizes = dict(BATCH=2, SEQLEN=45, HEADS=4, HEADDIM=5, GROUPS=2, DSTATE=6, DTYPE=dtype)
    problem, candidate = load("problems", "ssd_chunk_scan", **sizes), load("candidates", "ssd_chunk_scan")
    torch.manual_seed(0)
    inputs = problem.get_inputs()
    x = inputs[0]
    state = torch.zeros(2, 4, 5, 6, dtype=torch.float64)
    want, _ = recurrence(state, *inputs)
    got = problem.Model(16)(*inputs)
    torch_dtype = getattr(torch, dtype)
    assert_close(got, want, dtype=torch_dtype, table=FORWARD)
    with use_backend("reference"):
        assert_close(candidate.ModelNew(16)(*inputs), want, dtype=torch_dtype, table=FORWARD)
    assert x.dtype == torch_dtype


def test_ssd_decode_problem_and_candidate():
    problem = load("problems", "ssd_decode", BATCH=3, HEADS=4, HEADDIM=5, GROUPS=2, DSTATE=7, DTYPE="float32")
    candidate = load("candidates", "ssd_decode")
    torch.manual_seed(1)
    state, x, dt, A, B, C, D, dt_bias = problem.get_inputs()
    before = state.clone()
    want_y, want_state = recurrence(state.double(), x[:, None], dt[:, None], A, B[:, None], C[:, None], D, dt_bias)
    y, new = problem.Model()(state, x, dt, A, B, C, D, dt_bias)
    assert_close(y, want_y[:, 0], dtype=torch.float32, table=FORWARD)
    assert_close(new, want_state, dtype=torch.float32, table=FORWARD)
    with use_backend("reference"):
        y2, new2 = candidate.ModelNew()(state, x, dt, A, B, C, D, dt_bias)
    assert_close(y2, want_y[:, 0], dtype=torch.float32, table=FORWARD)
    assert_close(new2, want_state, dtype=torch.float32, table=FORWARD)
    assert torch.equal(state, before)  # the problem's inputs are left alone
