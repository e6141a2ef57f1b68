"""tilekit.ops.ssd_scan (Mamba-2 SSD, forward) against a float64 sequential recurrence and a float64
quadratic (attention-form) SSD, both written here: chunk sizes 16/32/64 (256 once), L not a multiple of the
chunk, initial_states, and seq_idx with 3 packed sequences equal to running them separately."""
import pytest
import torch

import tilekit.ops as tk_ops
from tilekit.ops import use_backend
from tilekit.tolerances import assert_close, op_table

from conftest import cpu_backends

FORWARD = op_table("ssm", "FORWARD")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def make(bt, length, heads, hdim, groups, n, dtype, seed):
    gen = torch.Generator().manual_seed(seed)

    def rand(*s, to=dtype):
        return torch.randn(*s, generator=gen, dtype=torch.float64).to(to)

    return dict(x=rand(bt, length, heads, hdim), dt=(torch.rand(bt, length, heads, generator=gen) - 1.5).to(dtype),
                A=-(torch.rand(heads, generator=gen) * 2 + 0.3), B=rand(bt, length, groups, n),
                C=rand(bt, length, groups, n), D=rand(heads, hdim, to=torch.float32), z=rand(bt, length, heads, hdim),
                dt_bias=rand(heads, to=torch.float32) * 0.3, initial_states=rand(bt, heads, hdim, n, to=torch.float32))


def steps(p, seq_idx=None):
    """float64 dt after bias, softplus; and per-head B, C."""
    f = torch.float64
    heads = p["x"].shape[2]
    dt = torch.nn.functional.softplus(p["dt"].to(f) + p["dt_bias"].to(f))
    rep = heads // p["B"].shape[2]
    return dt, p["B"].to(f).repeat_interleave(rep, 2), p["C"].to(f).repeat_interleave(rep, 2)


def sequential(p, seq_idx=None):
    f = torch.float64
    dt, B, C = steps(p)
    x = p["x"].to(f)
    bt, length, heads, hdim = x.shape
    state = p["initial_states"].to(f).clone()
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * p["A"].to(f))[:, :, None, None]
        if seq_idx is not None and t > 0:
            decay = decay * (seq_idx[:, t] == seq_idx[:, t - 1]).to(f)[:, None, None, None]
        state = decay * state + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C[:, t]))
    y = torch.stack(ys, 1) + x * p["D"].to(f)
    z = p["z"].to(f)
    return y * z * torch.sigmoid(z), state


def quadratic(p):
    """The attention form: y = (L ∘ C B^T) (dt x) + C-weighted initial state, L = exp(segsum(dt A))."""
    f = torch.float64
    dt, B, C = steps(p)
    x = p["x"].to(f)
    a = dt * p["A"].to(f)                                   # (Bt, L, H)
    cum = a.cumsum(1)
    seg = cum[:, :, None, :] - cum[:, None, :, :]           # (Bt, i, j, H)
    length = x.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()[None, :, :, None]
    decay = torch.where(causal, seg, torch.tensor(-float("inf"), dtype=f)).exp()
    scores = torch.einsum("bihn,bjhn->bijh", C, B) * decay * dt[:, None, :, :]
    y = torch.einsum("bijh,bjhp->bihp", scores, x)
    y = y + torch.einsum("bihn,bhpn->bihp", C, p["initial_states"].to(f)) * cum.exp()[..., None]
    y = y + x * p["D"].to(f)
    z = p["z"].to(f)
    return y * z * torch.sigmoid(z)


def run(p, chunk, backend, **kw):
    with use_backend(backend):
        return tk_ops.ssd_scan(p["x"], p["dt"], p["A"], p["B"], p["C"], chunk, D=p["D"], z=p["z"],
                               dt_bias=p["dt_bias"], initial_states=p["initial_states"], dt_softplus=True,
                               return_final_states=True, **kw)


def test_references_agree():
    p = make(1, 23, 2, 3, 1, 4, torch.float64, 1)
    torch.testing.assert_close(sequential(p)[0], quadratic(p))


@pytest.mark.parametrize("chunk,length,dtype", [(16, 37, torch.float32), (32, 70, torch.float16),
                                                (64, 100, torch.bfloat16), (256, 20, torch.float32)])
def test_matches_sequential_and_quadratic(chunk, length, dtype):
    p = make(2, length, 4, 5, 2, 6, dtype, chunk)
    y, final = run(p, chunk, "reference")
    want, want_final = sequential(p)
    assert y.dtype == dtype and final.dtype == torch.float32
    assert_close(y, want, dtype=dtype, table=FORWARD)
    assert_close(y, quadratic(p), dtype=dtype, table=FORWARD)
    assert_close(final, want_final, dtype=dtype, table=FORWARD)


@pytest.mark.skipif("opencl" not in cpu_backends(), reason="no OpenCL device here")
def test_on_opencl():
    p = make(1, 40, 2, 5, 1, 6, torch.float32, 3)
    y, final = run(p, 16, "opencl")
    want, want_final = sequential(p)
    assert_close(y, want, dtype=torch.float32, table=FORWARD)
    assert_close(final, want_final, dtype=torch.float32, table=FORWARD)


def test_seq_idx_equals_running_sequences_separately():
    lengths = [13, 30, 9]
    p = make(1, sum(lengths), 2, 3, 1, 4, torch.float32, 4)
    seq_idx = torch.repeat_interleave(torch.arange(3, dtype=torch.int32), torch.tensor(lengths))[None]
    y, final = run(p, 16, "reference", seq_idx=seq_idx)
    want, want_final = sequential(p, seq_idx)
    assert_close(y, want, dtype=torch.float32, table=FORWARD)
    assert_close(final, want_final, dtype=torch.float32, table=FORWARD)
    start = 0
    for i, n in enumerate(lengths):  # each piece alone: the first keeps initial_states, the others start at 0
        piece = {k: (v[:, start:start + n] if k in ("x", "dt", "B", "C", "z") else v) for k, v in p.items()}
        if i:
            piece["initial_states"] = torch.zeros_like(p["initial_states"])
        alone, alone_final = run(piece, 16, "reference")
        assert_close(y[:, start:start + n], alone.double(), dtype=torch.float32, table=FORWARD)
        start += n
    assert_close(final, alone_final, dtype=torch.float32, table=FORWARD)


def test_empty_sequence():
    p = make(2, 0, 2, 3, 1, 4, torch.float32, 5)
    y, final = run(p, 16, "reference")
    assert y.shape == (2, 0, 2, 3) and torch.equal(final, p["initial_states"])


def test_dt_limit_clamps_the_step():
    p = make(1, 20, 2, 3, 1, 4, torch.float32, 6)
    lo, hi = 0.2, 0.4
    y, _ = run(p, 16, "reference", dt_limit=(lo, hi))
    # the same problem with dt already clamped and no softplus/bias gives the same output
    dt = torch.nn.functional.softplus(p["dt"].double() + p["dt_bias"].double()).clamp(lo, hi)
    plain = {**p, "dt": torch.log(torch.expm1(dt)).float(), "dt_bias": torch.zeros_like(p["dt_bias"])}
    want, _ = sequential(plain)
    assert_close(y, want, dtype=torch.float32, table=FORWARD)


def test_opcheck_and_argument_checks():
    from torch.library import opcheck
    p = make(1, 20, 2, 3, 1, 4, torch.float32, 7)
    with use_backend("reference"):
        opcheck(torch.ops.tilekit.ssd_scan.default, (p["x"], p["dt"], p["A"], p["B"], p["C"], 16),
                test_utils=("test_schema", "test_faketensor"))
    with pytest.raises(ValueError, match="chunk_size"):
        tk_ops.ssd_scan(p["x"], p["dt"], p["A"], p["B"], p["C"], 24)
    with pytest.raises(ValueError, match="'B'"):
        tk_ops.ssd_scan(p["x"], p["dt"], p["A"], p["B"][:, :, :, :2], p["C"], 16)
