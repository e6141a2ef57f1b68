"""tilekit.ops.selective_scan against a float64 sequential recurrence written here, forward and backward.

Inputs are drawn in float64, rounded to the dtype under test, and the expected values come from this file's
own loop over time on those rounded values (never from tilekit). Tolerances: ops/ssm/tolerances.py.
The reference executor and OpenCL (PoCL) take Hypothesis cases in fp32/fp16/bf16; the Triton interpreter
(slow on scans, wrong on bf16) a few small fixed shapes in fp32/fp16.
"""
import warnings

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch.library import opcheck

import tilekit.ops as tk_ops
from tilekit.ops import use_backend
from tilekit.ops.ssm import op as scan_op
from tilekit.tolerances import assert_close, op_table

from conftest import cpu_backends

FORWARD = op_table("ssm", "FORWARD")
BACKWARD = op_table("ssm", "BACKWARD")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
MODES = ["fixed", "variable", "grouped"]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def expected_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None):
    """(out, last_state) in float64: x_t = exp(dt_t A) x_{t-1} + dt_t B_t u_t, y_t = C_t x_t + D u_t, one step
    at a time, channel by channel over the group of each channel."""
    f = torch.float64
    bt, dm, length = u.shape
    n = A.shape[1]
    dt = delta.to(f) + (delta_bias.to(f)[:, None] if delta_bias is not None else 0)
    if delta_softplus:
        dt = torch.where(dt > 20, dt, torch.log1p(torch.exp(dt)))

    def at(x, t):  # (Bt, Dm, N) at step t
        x = x.to(f)
        if x.dim() == 2:
            return x.expand(bt, dm, n)
        if x.dim() == 3:
            return x[:, None, :, t].expand(bt, dm, n)
        per_group = dm // x.shape[1]
        return x[:, torch.arange(dm) // per_group, :, t]

    x = initial_state.to(f) if initial_state is not None else torch.zeros(bt, dm, n, dtype=f)
    ys = []
    for t in range(length):
        x = torch.exp(dt[..., t, None] * A.to(f)) * x + (dt[..., t] * u[..., t].to(f))[..., None] * at(B, t)
        ys.append(torch.einsum("bdn,bdn->bd", x, at(C, t)))
    y = torch.stack(ys, -1) if ys else torch.zeros(bt, dm, 0, dtype=f)
    if D is not None:
        y = y + u.to(f) * D.to(f)[:, None]
    if z is not None:
        zf = z.to(f)
        y = y * zf / (1 + torch.exp(-zf))
    return y, x


def make_problem(bt, dm, length, n, mode, dtype, seed, groups=1, with_d=True, with_z=True, with_bias=True,
                 with_init=True):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0, shift=0.0, to=dtype):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + shift).to(to)

    bc_shape = {"fixed": (dm, n), "variable": (bt, n, length), "grouped": (bt, groups, n, length)}[mode]
    problem = dict(
        u=rand(bt, dm, length),
        delta=(torch.rand(bt, dm, length, generator=gen, dtype=torch.float64) * 0.8 + 0.05).to(dtype),
        A=-(torch.rand(dm, n, generator=gen, dtype=torch.float64) * 2 + 0.2).to(torch.float32),
        B=rand(*bc_shape), C=rand(*bc_shape),
        D=rand(dm, to=torch.float32) if with_d else None,
        z=rand(bt, dm, length) if with_z else None,
        # positive: without softplus a negative step would make exp(dt A) > 1 and the state blow up
        delta_bias=rand(dm, scale=0.3, to=torch.float32).abs() if with_bias else None,
        initial_state=rand(bt, dm, n, to=torch.float32) if with_init else None,
    )
    return problem


def check_forward(problem, softplus, dtype, backend):
    with use_backend(backend):
        out, last = tk_ops.selective_scan(**problem, delta_softplus=softplus, return_last_state=True)
    want_out, want_last = expected_scan(**problem, delta_softplus=softplus)
    assert out.dtype == problem["u"].dtype and out.shape == problem["u"].shape and out.is_contiguous()
    assert last.dtype == torch.float32
    assert_close(out, want_out, dtype=dtype, table=FORWARD, msg=f"out ({backend})")
    assert_close(last, want_last, dtype=dtype, table=FORWARD, msg=f"last_state ({backend})")


# (bt, dm, L, N, groups): ragged, non-power-of-two; one step; L longer than the CPU chunk (256) and ragged
SHAPES = st.tuples(st.integers(1, 3), st.sampled_from([1, 3, 6, 12]), st.integers(1, 300), st.integers(1, 40))

HAS_OPENCL = "opencl" in cpu_backends()


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(shape=SHAPES, mode=st.sampled_from(MODES), dtype=st.sampled_from(DTYPES),
       flags=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans()),
       seed=st.integers(0, 2**16))
@example(shape=(1, 1, 1, 1), mode="fixed", dtype=torch.float32, flags=(True,) * 5, seed=1)
@example(shape=(2, 6, 257, 17), mode="grouped", dtype=torch.float16, flags=(True,) * 5, seed=2)
@example(shape=(2, 12, 33, 256), mode="variable", dtype=torch.bfloat16, flags=(False, True, True, True, False), seed=3)
@example(shape=(0, 3, 5, 4), mode="variable", dtype=torch.float32, flags=(True,) * 5, seed=4)
@example(shape=(2, 3, 0, 4), mode="grouped", dtype=torch.float32, flags=(True,) * 5, seed=5)
@example(shape=(2, 0, 5, 4), mode="fixed", dtype=torch.float32, flags=(True,) * 5, seed=6)
def test_forward_matches_float64_recurrence(shape, mode, dtype, flags, seed):
    bt, dm, length, n = shape
    with_d, with_z, with_bias, with_init, softplus = flags
    groups = 3 if mode == "grouped" and dm % 3 == 0 and dm else 1
    problem = make_problem(bt, dm, length, n, mode, dtype, seed, groups, with_d, with_z, with_bias, with_init)
    check_forward(problem, softplus, dtype, "reference")


# PoCL compiles each specialization for tens of seconds: one per dtype (every option on, N in 5..8 so the
# state tile is 8 wide); shapes and the B/C mode (one code path) vary freely.
@pytest.mark.skipif(not HAS_OPENCL, reason="no OpenCL device (pyopencl + PoCL) here")
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=5, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(shape=st.tuples(st.integers(1, 3), st.sampled_from([1, 3, 6, 12]), st.integers(1, 100), st.integers(5, 8)),
       mode=st.sampled_from(MODES), seed=st.integers(0, 2**16))
@example(shape=(2, 6, 37, 7), mode="grouped", seed=2)
@example(shape=(0, 3, 5, 8), mode="variable", seed=4)
def test_forward_on_opencl(dtype, shape, mode, seed):
    bt, dm, length, n = shape
    groups = 3 if mode == "grouped" and dm % 3 == 0 else 1
    problem = make_problem(bt, dm, length, n, mode, dtype, seed, groups)
    check_forward(problem, True, dtype, "opencl")


INTERPRETER_CASES = [((1, 4, 20, 4), "variable", torch.float32), ((2, 3, 9, 5), "grouped", torch.float16),
                     ((1, 2, 11, 3), "fixed", torch.float16)]


@pytest.mark.skipif("triton" not in cpu_backends(), reason="the Triton interpreter is not installed")
@pytest.mark.parametrize("shape,mode,dtype", INTERPRETER_CASES)
def test_forward_on_triton_interpreter(shape, mode, dtype):
    bt, dm, length, n = shape
    problem = make_problem(bt, dm, length, n, mode, dtype, 7, groups=dm if mode == "grouped" else 1)
    check_forward(problem, True, dtype, "triton")


# ---- gradients ----------------------------------------------------------------------------------

DIFFERENTIABLE = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def check_gradients(problem, softplus, dtype, backend, seed):
    names = [k for k in DIFFERENTIABLE if problem[k] is not None]
    leaves = {k: problem[k].detach().clone().requires_grad_() for k in names}
    wide = {k: problem[k].detach().double().requires_grad_() for k in names}
    grad_out = torch.randn(problem["u"].shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with use_backend(backend):
        out = tk_ops.selective_scan(**{**problem, **leaves}, delta_softplus=softplus)
        got = torch.autograd.grad(out, [leaves[k] for k in names], grad_out.to(out.dtype))
    want_out, _ = expected_scan(**{**problem, **wide}, delta_softplus=softplus)
    want = torch.autograd.grad(want_out, [wide[k] for k in names], grad_out)
    for name, g, w in zip(names, got, want):
        assert g.dtype == problem[name].dtype and g.shape == problem[name].shape
        # sums over L (and the batch) grow with their magnitude: scale atol by the expected's largest value
        assert_close(g, w, dtype=dtype, table=BACKWARD, msg=f"d{name} ({backend})",
                     extra_atol=BACKWARD[dtype][1] * w.abs().max())


# each flag set is its own backward specialization (seconds to build): a few fixed cases, ragged L over 2+ chunks
@pytest.mark.parametrize("shape,mode,flags,seed", [
    ((2, 6, 67, 5), "grouped", (True,) * 5, 11),
    ((2, 4, 150, 3), "fixed", (True, False, True, False, True), 12),
    ((1, 3, 1, 17), "variable", (False, True, False, True, False), 13),
])
def test_gradients_match_float64_autograd(shape, mode, flags, seed):
    bt, dm, length, n = shape
    with_d, with_z, with_bias, with_init, softplus = flags
    groups = 2 if mode == "grouped" and dm % 2 == 0 else 1
    problem = make_problem(bt, dm, length, n, mode, torch.float32, seed, groups, with_d, with_z, with_bias,
                           with_init)
    check_gradients(problem, softplus, torch.float32, "reference", seed)


@pytest.mark.skipif(not HAS_OPENCL, reason="no OpenCL device (pyopencl + PoCL) here")
def test_gradients_on_opencl():
    problem = make_problem(2, 6, 37, 7, "grouped", torch.float32, 13, groups=3)
    check_gradients(problem, True, torch.float32, "opencl", 13)


@pytest.mark.skipif("triton" not in cpu_backends(), reason="the Triton interpreter is not installed")
def test_gradients_on_triton_interpreter():
    # two chunks of the backward's second pass, grouped B/C, every option (about 2 s)
    problem = make_problem(1, 2, 70, 4, "grouped", torch.float32, 5, groups=2)
    check_gradients(problem, True, torch.float32, "triton", 5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gradients_half_precision_on_reference(dtype):
    problem = make_problem(2, 4, 40, 6, "variable", dtype, 21)
    check_gradients(problem, True, dtype, "reference", 21)


def test_gradcheck_tiny():
    problem = make_problem(1, 2, 5, 3, "grouped", torch.float64, 31, groups=2)
    problem = {k: (v.double().requires_grad_() if v is not None else None) for k, v in problem.items()}
    names = [k for k in DIFFERENTIABLE if problem[k] is not None]

    def fn(*tensors):
        return tk_ops.selective_scan(**{**problem, **dict(zip(names, tensors))}, delta_softplus=True)

    with use_backend("reference"):
        assert torch.autograd.gradcheck(fn, [problem[k] for k in names])


def test_last_state_takes_no_gradient():
    problem = make_problem(1, 2, 7, 3, "variable", torch.float32, 41)
    u = problem["u"].requires_grad_()
    with use_backend("reference"):
        out, last = tk_ops.selective_scan(**{**problem, "u": u}, return_last_state=True)
    assert out.requires_grad and not last.requires_grad


def test_empty_inputs_give_zero_gradients():
    problem = make_problem(2, 3, 0, 4, "variable", torch.float32, 42)
    leaves = {k: problem[k].requires_grad_() for k in DIFFERENTIABLE}
    out = tk_ops.selective_scan(**{**problem, **leaves})
    assert out.shape == (2, 3, 0)
    out.sum().backward()
    for k in ("A", "D", "delta_bias", "initial_state"):
        assert leaves[k].grad is not None and not leaves[k].grad.any(), k


def test_saved_tensors_stay_linear_in_length():
    """What autograd keeps is the inputs (O(Bt Dm L)) plus one state per chunk, never the state history."""
    bt, dm, length, n = 1, 4, 512, 16
    problem = make_problem(bt, dm, length, n, "variable", torch.float32, 51)
    leaves = {k: problem[k].requires_grad_() for k in DIFFERENTIABLE}
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with use_backend("reference"), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = tk_ops.selective_scan(**{**problem, **leaves}, delta_softplus=True)
    chunk = scan_op.CHECKPOINT_STEPS
    inputs = sum(t.numel() * t.element_size() for t in problem.values() if t is not None)
    checkpoints = bt * dm * (-(-length // chunk)) * n * 4
    assert sum(saved) <= inputs + checkpoints
    assert sum(saved) < bt * dm * length * n * 4  # the full state history would not fit
    out.sum().backward()


# ---- torch.library integration ------------------------------------------------------------------

def test_opcheck_forward_and_backward():
    problem = make_problem(2, 4, 9, 3, "grouped", torch.float32, 61, groups=2)
    args = [problem[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")]
    args = [a.requires_grad_() for a in args]
    with use_backend("reference"):
        opcheck(torch.ops.tilekit.selective_scan.default, (*args, True))


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    problem = make_problem(1, 4, 13, 3, "variable", torch.float32, 71)
    leaves = {k: problem[k].detach().clone().requires_grad_() for k in ("u", "delta", "B")}

    def block(u, delta, B):
        out, last = tk_ops.selective_scan(u, delta, problem["A"], B, problem["C"], D=problem["D"], z=problem["z"],
                                          delta_softplus=True, return_last_state=True)
        return out * 2, last

    with use_backend("reference"):
        # aot_eager: the whole graph through dynamo, fakes and AOT autograd, without inductor's codegen
        # (which costs ~50 s cold on 2 cores and adds nothing about the ops)
        out, last = torch.compile(block, fullgraph=True, backend="aot_eager")(**leaves)
        out.sum().backward()
    wide = {k: v.detach().double().requires_grad_() for k, v in leaves.items()}
    want, want_last = expected_scan(wide["u"], wide["delta"], problem["A"], wide["B"], problem["C"], D=problem["D"],
                                    z=problem["z"], delta_softplus=True)
    (want * 2).sum().backward()
    assert_close(out.detach(), want.detach() * 2, dtype=torch.float32, table=FORWARD)
    assert_close(last, want_last.detach(), dtype=torch.float32, table=FORWARD)
    for k in leaves:
        assert_close(leaves[k].grad, wide[k].grad, dtype=torch.float32, table=BACKWARD,
                     extra_atol=BACKWARD[torch.float32][1] * wide[k].grad.abs().max())


# ---- argument checks ----------------------------------------------------------------------------

def test_bad_arguments_name_the_argument():
    p = make_problem(2, 4, 9, 3, "variable", torch.float32, 81)
    with pytest.raises(ValueError, match="'delta'"):
        tk_ops.selective_scan(p["u"], p["delta"][:, :, :5], p["A"], p["B"], p["C"])
    with pytest.raises(ValueError, match="'B'"):
        tk_ops.selective_scan(p["u"], p["delta"], p["A"], p["B"][:, :2], p["C"])
    with pytest.raises(ValueError, match="'C'.*divide"):
        tk_ops.selective_scan(p["u"], p["delta"], p["A"], p["B"], torch.randn(2, 3, 3, 9))
    with pytest.raises(TypeError, match="'u'"):
        tk_ops.selective_scan(p["u"].to(torch.int32), p["delta"], p["A"], p["B"], p["C"])
    with pytest.raises(ValueError, match="'D'"):
        tk_ops.selective_scan(p["u"], p["delta"], p["A"], p["B"], p["C"], D=torch.randn(5))
    with pytest.raises(TypeError):
        tk_ops.selective_scan(p["u"], p["delta"], p["A"], p["B"], p["C"], None)  # optional args are keyword-only


def test_strided_inputs_are_read_in_place():
    p = make_problem(2, 4, 9, 3, "variable", torch.float32, 91)
    u_t = p["u"].transpose(1, 2).contiguous().transpose(1, 2)  # (Bt, Dm, L) with L innermost-stride Dm
    B_view = torch.randn(2, 9, 3).transpose(1, 2)
    with use_backend("reference"):
        out = tk_ops.selective_scan(u_t, p["delta"], p["A"], B_view, p["C"], D=p["D"])
    want, _ = expected_scan(u_t, p["delta"], p["A"], B_view, p["C"], D=p["D"])
    assert out.is_contiguous()
    assert_close(out, want, dtype=torch.float32, table=FORWARD)
