"""tilekit.ops.ssd_scan (Mamba-2 SSD, forward and backward) against a float64 sequential recurrence and a float64
quadratic (attention-form) SSD, both written here: chunk sizes 16/32/64 (256 once), L not a multiple of the
chunk, initial_states, and seq_idx with 3 packed sequences equal to running them separately. Gradients (through
y and final_states) against autograd of the float64 recurrence, gradcheck at a tiny size, opcheck of both ops
and torch.compile(fullgraph=True)."""
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import tilekit.ops as tk_ops
from tilekit.ops import use_backend
from tilekit.tolerances import assert_close, op_table

from conftest import cpu_backends

FORWARD = op_table("ssm", "FORWARD")
BACKWARD = op_table("ssm", "BACKWARD")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def make(bt, length, heads, hdim, groups, n, dtype, seed):
    gen = torch.Generator().manual_seed(seed)

    def rand(*s, to=dtype):
        return torch.randn(*s, generator=gen, dtype=torch.float64).to(to)

    return dict(x=rand(bt, length, heads, hdim), dt=(torch.rand(bt, length, heads, generator=gen) - 1.5).to(dtype),
                A=-(torch.rand(heads, generator=gen) * 2 + 0.3), B=rand(bt, length, groups, n),
                C=rand(bt, length, groups, n), D=rand(heads, hdim, to=torch.float32), z=rand(bt, length, heads, hdim),
                dt_bias=rand(heads, to=torch.float32) * 0.3, initial_states=rand(bt, heads, hdim, n, to=torch.float32))


def steps(p, dt_limit=None):
    """float64 dt after bias, softplus (and the dt_limit clamp); and per-head B, C."""
    f = torch.float64
    heads = p["x"].shape[2]
    dt = torch.nn.functional.softplus(p["dt"].to(f) + p["dt_bias"].to(f))
    if dt_limit is not None:
        dt = dt.clamp(*dt_limit)
    rep = heads // p["B"].shape[2]
    return dt, p["B"].to(f).repeat_interleave(rep, 2), p["C"].to(f).repeat_interleave(rep, 2)


def sequential(p, seq_idx=None, dt_limit=None):
    f = torch.float64
    dt, B, C = steps(p, dt_limit)
    x = p["x"].to(f)
    bt, length, heads, hdim = x.shape
    state = (p["initial_states"].to(f).clone() if p.get("initial_states") is not None
             else x.new_zeros(bt, heads, hdim, p["B"].shape[3]))
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * p["A"].to(f))[:, :, None, None]
        if seq_idx is not None and t > 0:
            decay = decay * (seq_idx[:, t] == seq_idx[:, t - 1]).to(f)[:, None, None, None]
        state = decay * state + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C[:, t]))
    D = p["D"].to(f)
    y = (torch.stack(ys, 1) if ys else x.new_zeros(x.shape, dtype=f)) + x * (D if D.dim() == 2 else D[:, None])
    if p.get("z") is None:
        return y, state
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


# (Bt, L, H, P, groups, N, chunk): ragged, non-power-of-two; flags (D per head dim, z, seq_idx, initial_states)
@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 90), st.sampled_from([1, 2, 4, 6]), st.integers(1, 9),
                       st.sampled_from([1, 2]), st.integers(1, 20), st.sampled_from([16, 32, 64])),
       flags=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]), seed=st.integers(0, 2**16))
@example(shape=(1, 1, 1, 1, 1, 1, 16), flags=(True, True, True, True), dtype=torch.float32, seed=1)
@example(shape=(0, 5, 2, 3, 1, 4, 16), flags=(True, True, False, True), dtype=torch.float32, seed=2)
@example(shape=(2, 0, 2, 3, 1, 4, 32), flags=(False, True, False, True), dtype=torch.float32, seed=3)
@example(shape=(2, 7, 2, 0, 1, 4, 16), flags=(True, False, False, True), dtype=torch.float32, seed=4)
@example(shape=(2, 7, 2, 3, 1, 0, 16), flags=(True, True, False, True), dtype=torch.float32, seed=5)
def test_forward_property_against_the_recurrence(shape, flags, dtype, seed):
    bt, length, heads, hdim, groups, n, chunk = shape
    d_per_p, with_z, with_seq, with_init = flags
    groups = groups if heads % groups == 0 else 1
    p = make(bt, length, heads, hdim, groups, n, dtype, seed)
    if not d_per_p:
        p["D"] = p["D"][:, 0].contiguous() if hdim else torch.randn(heads)
    if not with_z:
        p["z"] = None
    if not with_init:
        p["initial_states"] = torch.zeros_like(p["initial_states"])
    seq_idx = None
    if with_seq and length:
        cuts = torch.randint(0, 2, (bt, length), generator=torch.Generator().manual_seed(seed))
        cuts[:, 0] = 0
        seq_idx = cuts.cumsum(1).to(torch.int32)
    y, final = run(p, chunk, "reference", **({"seq_idx": seq_idx} if seq_idx is not None else {}))
    want, want_final = sequential(p, seq_idx)
    assert y.shape == p["x"].shape and y.dtype == dtype and final.shape == (bt, heads, hdim, n)
    assert_close(y, want, dtype=dtype, table=FORWARD)
    assert_close(final, want_final, dtype=dtype, table=FORWARD)


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
    with pytest.raises(ValueError, match="'A' is on meta"):
        tk_ops.ssd_scan(p["x"], p["dt"], p["A"].to("meta"), p["B"], p["C"], 16)
    with pytest.raises(TypeError, match="seq_idx"):
        tk_ops.ssd_scan(p["x"], p["dt"], p["A"], p["B"], p["C"], 16, seq_idx=torch.zeros(1, 20, dtype=torch.int64))


# ---- gradients ----------------------------------------------------------------------------------

DIFFERENTIABLE = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states")


def check_gradients(p, chunk, backend, dtype, seed, seq_idx=None, dt_limit=None):
    """Every gradient, with upstream gradients on both y and final_states, against the float64 recurrence."""
    names = [k for k in DIFFERENTIABLE if p.get(k) is not None]
    leaves = {k: p[k].detach().clone().requires_grad_() for k in names}
    wide = {k: p[k].detach().double().requires_grad_() for k in names}
    kw = {"seq_idx": seq_idx} if seq_idx is not None else {}
    if dt_limit is not None:
        kw["dt_limit"] = dt_limit
    y, final = run({**p, **leaves}, chunk, backend, **kw)
    gen = torch.Generator().manual_seed(seed)
    grad_y = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    grad_final = torch.randn(final.shape, generator=gen, dtype=torch.float64)
    got = torch.autograd.grad((y, final), [leaves[k] for k in names], (grad_y.to(y.dtype), grad_final.float()))
    want_y, want_final = sequential({**p, **wide}, seq_idx, dt_limit)
    want = torch.autograd.grad((want_y, want_final), [wide[k] for k in names], (grad_y, grad_final))
    for name, g, w in zip(names, got, want):
        assert g.dtype == p[name].dtype and g.shape == p[name].shape, name
        # sums over L, head dims and the batch grow with their magnitude: atol scales with the largest value
        assert_close(g, w, dtype=dtype, table=BACKWARD, msg=f"d{name} ({backend}, chunk {chunk})",
                     extra_atol=BACKWARD[dtype][1] * (w.abs().max() if w.numel() else 0.0))


@pytest.mark.parametrize("chunk,length,dtype,d_per_head", [(16, 37, torch.float32, False),
                                                          (32, 70, torch.float32, True),
                                                          (16, 40, torch.float16, False),
                                                          (16, 21, torch.bfloat16, True)])
def test_gradients_match_float64_autograd(chunk, length, dtype, d_per_head):
    p = make(2, length, 4, 5, 2, 6, dtype, 10 + chunk)
    if d_per_head:
        p["D"] = p["D"][:, 0].contiguous()
    check_gradients(p, chunk, "reference", dtype, chunk)


# (Bt, L, H, P, groups, N, chunk), L ragged (rarely a multiple of the chunk); flags (initial_states, seq_idx,
# z, D per head dim)
@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 80), st.sampled_from([1, 2, 4]), st.integers(1, 7),
                       st.sampled_from([1, 2]), st.integers(1, 12), st.sampled_from([16, 32, 64])),
       flags=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
       dtype=st.sampled_from([torch.float32, torch.float32, torch.float16, torch.bfloat16]),
       seed=st.integers(0, 2**16))
@example(shape=(1, 45, 2, 3, 1, 5, 16), flags=(False, True, True, True), dtype=torch.float32, seed=1)
@example(shape=(2, 33, 4, 2, 2, 3, 32), flags=(True, False, False, False), dtype=torch.float32, seed=2)
@example(shape=(1, 70, 1, 4, 1, 4, 64), flags=(True, True, True, False), dtype=torch.float32, seed=3)
@example(shape=(0, 9, 2, 3, 1, 4, 16), flags=(True, True, True, True), dtype=torch.float32, seed=4)
@example(shape=(2, 9, 2, 0, 1, 4, 16), flags=(True, False, True, False), dtype=torch.float32, seed=5)
def test_gradients_property(shape, flags, dtype, seed):
    bt, length, heads, hdim, groups, n, chunk = shape
    with_init, with_seq, with_z, d_per_p = flags
    groups = groups if heads % groups == 0 else 1
    p = make(bt, length, heads, hdim, groups, n, dtype, seed)
    if not with_init:
        p["initial_states"] = None
    if not with_z:
        p["z"] = None
    if not d_per_p:
        p["D"] = torch.randn(heads, generator=torch.Generator().manual_seed(seed))
    seq_idx = None
    if with_seq:
        cuts = (torch.rand(bt, length, generator=torch.Generator().manual_seed(seed)) < 0.08).to(torch.int32)
        cuts[:, 0] = 0
        seq_idx = cuts.cumsum(1).to(torch.int32)
    check_gradients(p, chunk, "reference", dtype, seed, seq_idx=seq_idx)


def test_gradients_with_seq_idx_and_dt_limit():
    lengths = [13, 30, 9]
    p = make(1, sum(lengths), 2, 3, 1, 4, torch.float32, 11)
    seq_idx = torch.repeat_interleave(torch.arange(3, dtype=torch.int32), torch.tensor(lengths))[None]
    check_gradients(p, 32, "reference", torch.float32, 11, seq_idx=seq_idx, dt_limit=(0.3, 0.9))


def test_gradients_without_optional_inputs():
    p = make(1, 25, 2, 4, 1, 3, torch.float32, 12)
    for k in ("D", "z", "dt_bias", "initial_states"):
        p[k] = None
    names = ["x", "dt", "A", "B", "C"]
    leaves = {k: p[k].clone().requires_grad_() for k in names}
    wide = {k: p[k].double().requires_grad_() for k in names}
    with use_backend("reference"):
        y = tk_ops.ssd_scan(*[leaves[k] for k in names], 16)
    grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    got = torch.autograd.grad(y, [leaves[k] for k in names], grad_y.float())
    want_y = plain_sequential(*[wide[k] for k in names])
    want = torch.autograd.grad(want_y, [wide[k] for k in names], grad_y)
    for name, g, w in zip(names, got, want):
        assert_close(g, w, dtype=torch.float32, table=BACKWARD, msg=f"d{name}",
                     extra_atol=BACKWARD[torch.float32][1] * w.abs().max())


def plain_sequential(x, dt, A, B, C):
    """The recurrence with no softplus, bias, D, z or initial state."""
    heads = x.shape[2]
    Bh, Ch = (t.repeat_interleave(heads // t.shape[2], 2) for t in (B, C))
    state = x.new_zeros(x.shape[0], heads, x.shape[3], B.shape[3])
    ys = []
    for t in range(x.shape[1]):
        state = torch.exp(dt[:, t] * A)[:, :, None, None] * state + \
            (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ch[:, t]))
    return torch.stack(ys, 1)


@pytest.mark.skipif("opencl" not in cpu_backends(), reason="no OpenCL device here")
def test_bf16_on_opencl():
    # bf16 operands in the matmuls (the GPU path's DOT dtype) through PoCL, forward and every gradient (the
    # backward's OpenCL test: its fp32 twin cost as much PoCL compile time and the reference backend runs fp32)
    p = make(1, 37, 2, 5, 1, 6, torch.bfloat16, 19)
    y, final = run(p, 16, "opencl")
    want, want_final = sequential(p)
    assert y.dtype == torch.bfloat16
    assert_close(y, want, dtype=torch.bfloat16, table=FORWARD)
    assert_close(final, want_final, dtype=torch.bfloat16, table=FORWARD)
    check_gradients(p, 16, "opencl", torch.bfloat16, 19)


def test_tuned_backward_configs_reach_each_kernel():
    # a tuned entry per backward kernel id, each with its own tiles: the op asks for all three and the
    # gradients stay right with mixed sub-chunk sizes
    configs = {"ssd_scan.bwd": {"BP": 8, "BQ": 32, "num_warps": 2, "num_stages": 1},
               "ssd_scan.bwd_dc": {"BP": 16, "BQ": 16, "num_warps": 1, "num_stages": 1},
               "ssd_scan.bwd_dstate": {"BP": 8, "BQ": 64, "num_warps": 4, "num_stages": 1}}
    asked = set()

    def provider(kernel_id, shape, dtype, device, backend):
        asked.add(kernel_id)
        return configs.get(kernel_id)

    previous = tk_ops.set_config_provider(provider)
    try:
        p = make(1, 70, 2, 9, 1, 5, torch.float32, 18)
        check_gradients(p, 64, "reference", torch.float32, 18)
    finally:
        tk_ops.set_config_provider(previous)
    assert set(configs) <= asked


def test_gradcheck_tiny():
    p = make(1, 5, 1, 2, 1, 2, torch.float64, 14)
    p = {k: v.double() for k, v in p.items()}
    seq_idx = torch.tensor([[0, 0, 1, 1, 1]], dtype=torch.int32)
    names = list(DIFFERENTIABLE)

    def fn(*tensors):
        q = dict(zip(names, tensors))
        with use_backend("reference"):
            return tk_ops.ssd_scan(q["x"], q["dt"], q["A"], q["B"], q["C"], 16, D=q["D"], z=q["z"],
                                   dt_bias=q["dt_bias"], initial_states=q["initial_states"], seq_idx=seq_idx,
                                   dt_softplus=True, return_final_states=True)

    assert torch.autograd.gradcheck(fn, [p[k].requires_grad_() for k in names])


def test_empty_sequence_gives_zero_gradients():
    p = make(2, 0, 2, 3, 1, 4, torch.float32, 15)
    leaves = {k: p[k].requires_grad_() for k in DIFFERENTIABLE}
    y, final = run(leaves, 16, "reference")
    (y.sum() + final.sum()).backward()
    for k in ("A", "D", "dt_bias"):
        assert leaves[k].grad is not None and not leaves[k].grad.any(), k
    assert torch.equal(leaves["initial_states"].grad, torch.ones_like(p["initial_states"]))


def test_opcheck_backward_and_torch_compile():
    from torch.library import opcheck
    p = make(1, 20, 2, 3, 1, 4, torch.float32, 16)
    args = [p[k].requires_grad_() for k in ("x", "dt", "A", "B", "C")]
    with use_backend("reference"):
        opcheck(torch.ops.tilekit.ssd_scan.default,
                (*args, 16, p["D"], p["z"], p["dt_bias"], p["initial_states"], None, True, 0.0, 3.0e38))
        opcheck(torch.ops.tilekit.ssd_scan_backward.default,
                (*[a.detach() for a in args], 16, p["D"], p["z"], p["dt_bias"], p["initial_states"], None, True, 0.0,
                 3.0e38, torch.randn(p["x"].shape), torch.randn(p["initial_states"].shape)),
                test_utils=("test_schema", "test_faketensor"))
    torch._dynamo.reset()
    leaves = {k: p[k].detach().clone().requires_grad_() for k in ("x", "dt", "B")}

    def block(x, dt, B):
        y, final = tk_ops.ssd_scan(x, dt, p["A"], B, p["C"], 16, D=p["D"], z=p["z"], dt_bias=p["dt_bias"],
                                   dt_softplus=True, return_final_states=True)
        return y * 2, final

    with use_backend("reference"):
        # aot_eager: dynamo, fakes and AOT autograd over the whole graph, without inductor's slow codegen
        y, final = torch.compile(block, fullgraph=True, backend="aot_eager")(**leaves)
        (y.sum() + final.sum()).backward()
    wide = {k: v.detach().double().requires_grad_() for k, v in leaves.items()}
    ref = {**p, **wide, "initial_states": torch.zeros_like(p["initial_states"])}
    want_y, want_final = sequential(ref)
    ((want_y * 2).sum() + want_final.sum()).backward()
    assert_close(y.detach(), want_y.detach() * 2, dtype=torch.float32, table=FORWARD)
    for k in leaves:
        assert_close(leaves[k].grad, wide[k].grad, dtype=torch.float32, table=BACKWARD,
                     extra_atol=BACKWARD[torch.float32][1] * wide[k].grad.abs().max())


@pytest.mark.skipif("triton" not in cpu_backends(), reason="the Triton interpreter is not installed")
def test_forward_and_gradients_on_triton_interpreter():
    # Triton's dot needs 16-wide tiles: P = N = 16; chunk 32 with the backward's 16-row sub-chunks
    p = make(1, 40, 1, 16, 1, 16, torch.float32, 17)
    y, final = run(p, 32, "triton")
    want, want_final = sequential(p)
    assert_close(y, want, dtype=torch.float32, table=FORWARD)
    assert_close(final, want_final, dtype=torch.float32, table=FORWARD)
    check_gradients(p, 32, "triton", torch.float32, 17)
