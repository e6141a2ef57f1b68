"""fused_moe's and moe_layer's backward against autograd of a float64 reference written here, gradcheck at a
tiny size, the torch-op checks, and the default backward path's kernels free of atomics on the IR."""
import importlib

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings, strategies as st

import tilekit.ops as ops
from tilekit.tolerances import assert_close, op_table

FUSED_BACKWARD = op_table("moe", "FUSED_BACKWARD")
SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def moe_float64(x, w_gate_up, w_down, weights, ids, activation="silu"):
    """Slot by slot in float64 with torch ops autograd can follow: y[t] = sum_j w[t,j] FFN_{ids[t,j]}(x[t])."""
    ffn = w_gate_up.shape[1] // 2
    y = torch.zeros(x.shape, dtype=torch.float64)
    for j in range(ids.shape[1]):
        e = ids[:, j].long()
        h = torch.einsum("tfh,th->tf", w_gate_up[e], x)
        gate, up = h[:, :ffn], h[:, ffn:]
        if activation == "silu":
            act = gate * torch.sigmoid(gate)
        else:
            act = 0.5 * gate * (1 + torch.tanh(0.7978845608028654 * (gate + 0.044715 * gate ** 3)))
        y = y + weights[:, j, None] * torch.einsum("thf,tf->th", w_down[e], act * up)
    return y


def make_problem(tokens, hidden, ffn, experts, top_k, skew, dtype, seed, weights_dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, hidden, generator=gen).to(dtype)
    w_gate_up = (torch.randn(experts, 2 * ffn, hidden, generator=gen) / hidden ** 0.5).to(dtype)
    w_down = (torch.randn(experts, hidden, ffn, generator=gen) / ffn ** 0.5).to(dtype)
    logits = torch.randn(tokens, experts, generator=gen)
    logits[:, 0] += skew  # an imbalance: expert 0 takes more (at large skew, every token)
    weights, ids = ops.moe_route(logits, top_k)
    grad_y = torch.randn(tokens, hidden, generator=gen).to(dtype)
    return x, w_gate_up, w_down, weights.to(weights_dtype), ids, grad_y


def reference_grads(x, w_gate_up, w_down, weights, ids, grad_y, activation):
    wide = [t.detach().double().requires_grad_() for t in (x, w_gate_up, w_down, weights)]
    y = moe_float64(*wide, ids, activation)
    return torch.autograd.grad(y, wide, grad_y.double())


def check_backward(case, backend):
    activation = case.pop("activation")
    x, w_gate_up, w_down, weights, ids, grad_y = make_problem(**case)
    leaves = [t.clone().requires_grad_() for t in (x, w_gate_up, w_down, weights)]
    with ops.use_backend(backend):
        y = ops.fused_moe(*leaves, ids, activation=activation)
        got = torch.autograd.grad(y, leaves, grad_y)
    want = reference_grads(x, w_gate_up, w_down, weights, ids, grad_y, activation)
    for name, leaf, g, w in zip(("dx", "dw_gate_up", "dw_down", "dweights"), leaves, got, want):
        assert g.shape == leaf.shape and g.dtype == leaf.dtype, name
        assert_close(g, w.to(g.dtype), dtype=x.dtype, table=FUSED_BACKWARD, msg=name)


@st.composite
def problems(draw):
    experts = draw(st.integers(1, 9))
    dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
    return dict(tokens=draw(st.sampled_from([0, 1, 6, 19, 37])), hidden=draw(st.integers(3, 40)),
                ffn=draw(st.integers(3, 40)), experts=experts, top_k=draw(st.integers(1, min(4, experts))),
                skew=draw(st.sampled_from([0.0, 2.0, 50.0])), dtype=dtype,
                weights_dtype=draw(st.sampled_from([torch.float32, dtype])),
                activation=draw(st.sampled_from(["silu", "gelu"])), seed=draw(st.integers(0, 99)))


@settings(max_examples=12, **SETTINGS)
@given(problems())
@example(dict(tokens=0, hidden=8, ffn=8, experts=4, top_k=2, skew=0.0, dtype=torch.float32, activation="silu",
              seed=0))
@example(dict(tokens=1, hidden=5, ffn=3, experts=3, top_k=3, skew=0.0, dtype=torch.bfloat16, activation="gelu",
              seed=1))
@example(dict(tokens=37, hidden=33, ffn=35, experts=8, top_k=1, skew=1e4, dtype=torch.float16, activation="silu",
              seed=2))  # every token to expert 0, the other seven get no block and a zero gradient
def test_backward_reference(case):
    check_backward(case, "reference")


# OpenCL fp32 SiLU shares its forward kernels with test_fused_gpu_backends (the CI budget); GELU's derivative
# runs compiled on the Triton interpreter
@pytest.mark.parametrize("backend,dtype,activation", [("opencl", torch.float32, "silu"),
                                                      ("opencl", torch.float16, "silu"),
                                                      ("triton", torch.float16, "silu"),
                                                      ("triton", torch.float32, "gelu")])
def test_backward_gpu_backends(backend, dtype, activation):
    check_backward(dict(tokens=13, hidden=20, ffn=24, experts=5, top_k=2, skew=2.0, dtype=dtype,
                        activation=activation, seed=4), backend)


def test_backward_experts_without_tokens_get_zero_weight_gradients():
    x, w_gate_up, w_down, weights, ids, grad_y = make_problem(9, 8, 6, 6, 1, 1e4, torch.float32, 3)
    assert torch.all(ids == 0)
    leaves = [t.clone().requires_grad_() for t in (w_gate_up, w_down)]
    y = ops.fused_moe(x, *leaves, weights, ids)
    dw_gate_up, dw_down = torch.autograd.grad(y, leaves, grad_y)
    assert torch.all(dw_gate_up[1:] == 0) and torch.all(dw_down[1:] == 0)
    assert dw_gate_up[0].abs().sum() > 0 and dw_down[0].abs().sum() > 0


def test_backward_empty_tokens_give_zero_grads():
    x, w_gate_up, w_down, weights, ids, grad_y = make_problem(0, 8, 6, 4, 2, 0.0, torch.float32, 3)
    leaves = [t.clone().requires_grad_() for t in (x, w_gate_up, w_down, weights)]
    grads = torch.autograd.grad(ops.fused_moe(*leaves, ids), leaves, grad_y)
    for leaf, g in zip(leaves, grads):
        assert g.shape == leaf.shape and torch.all(g == 0)


def test_backward_gradcheck_float64():
    x, w_gate_up, w_down, weights, ids, _ = make_problem(3, 4, 3, 3, 2, 0.0, torch.float64, 5,
                                                         weights_dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (x, w_gate_up, w_down, weights)]
    for activation in ("silu", "gelu"):
        assert torch.autograd.gradcheck(lambda *a: ops.fused_moe(*a, ids, activation=activation), leaves)


def test_backward_is_deterministic():
    x, w_gate_up, w_down, weights, ids, grad_y = make_problem(19, 16, 12, 4, 2, 2.0, torch.float32, 6)
    runs = []
    for _ in range(2):
        leaves = [t.clone().requires_grad_() for t in (x, w_gate_up, w_down, weights)]
        runs.append(torch.autograd.grad(ops.fused_moe(*leaves, ids), leaves, grad_y))
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_backward_opcheck_and_compile():
    x, w_gate_up, w_down, weights, ids, grad_y = make_problem(5, 8, 6, 4, 2, 0.0, torch.float32, 8)
    leaves = [t.clone().requires_grad_() for t in (x, w_gate_up, w_down, weights)]
    torch.library.opcheck(torch.ops.tilekit.fused_moe.default, (*leaves, ids, "silu"),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
    torch.library.opcheck(torch.ops.tilekit.fused_moe_backward.default,
                          (grad_y, x, w_gate_up, w_down, weights, ids, "gelu"),
                          test_utils=("test_schema", "test_faketensor"))
    # gradients not asked for: empty (0,) tensors, from the fake too
    torch.library.opcheck(torch.ops.tilekit.fused_moe_backward.default,
                          (grad_y, x, w_gate_up, w_down, weights, ids, "silu", True, False, False, True),
                          test_utils=("test_schema", "test_faketensor"))

    # aot_eager traces the backward too: the backward op's fake runs in the compiled graph
    compiled = torch.compile(lambda *a: ops.fused_moe(*a, ids), fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(*leaves), leaves, grad_y)
    want = torch.autograd.grad(ops.fused_moe(*leaves, ids), leaves, grad_y)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def layer_reference_grads(x, router, w_gate_up, w_down, ids, grad_y, **route):
    """d(x, router, w_gate_up, w_down) of the float64 layer, with the routing the op chose (ids)."""
    wide = [t.detach().double().requires_grad_() for t in (x, router, w_gate_up, w_down)]
    logits = wide[0] @ wide[1].T
    p = torch.softmax(logits, -1) if route.get("scoring", "softmax") == "softmax" else torch.sigmoid(logits)
    weights = p.gather(1, ids.long())
    weights = weights / weights.sum(-1, keepdim=True)
    y = moe_float64(wide[0], wide[2], wide[3], weights, ids)
    return torch.autograd.grad(y, wide, grad_y.double())


@pytest.mark.parametrize("route", [dict(), dict(scoring="sigmoid", num_groups=4, topk_groups=2)])
def test_moe_layer_trains_its_router(route):
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(11, 16, generator=gen)
    router = torch.randn(8, 16, generator=gen)
    _, w_gate_up, w_down, _, _, grad_y = make_problem(11, 16, 12, 8, 2, 0.0, torch.float32, 11)
    leaves = [t.clone().requires_grad_() for t in (x, router, w_gate_up, w_down)]
    y = ops.moe_layer(leaves[0], leaves[1], leaves[2], leaves[3], 2, **route)
    got = torch.autograd.grad(y, leaves, grad_y)
    _, ids = ops.moe_route(x @ router.T, 2, **route)
    want = layer_reference_grads(x, router, w_gate_up, w_down, ids, grad_y, **route)
    assert got[1].abs().sum() > 0  # the router's gradient arrives
    for name, g, w in zip(("dx", "drouter", "dw_gate_up", "dw_down"), got, want):
        assert_close(g, w.float(), table=FUSED_BACKWARD, msg=name)


def test_forward_and_backward_launches_have_no_atomics_in_their_ir(monkeypatch):
    """Every kernel a moe_layer training step launches (router matmul and its backward, route and its
    backward, align, both grouped GEMMs, the combine, and fused_moe's backward kernels), checked on the IR of
    the very launch; exactly 2 grouped-GEMM launches in the forward."""
    tk_kernel = importlib.import_module("tilekit.kernel")
    launches = []
    original = tk_kernel.Launcher.__call__

    def recording(self, *args, **kwargs):
        launches.append((self.kernel, args, {k: v for k, v in kwargs.items() if k != "backend"}))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(tk_kernel.Launcher, "__call__", recording)
    x, w_gate_up, w_down, _, _, grad_y = make_problem(9, 16, 24, 8, 2, 0.0, torch.float32, 9)
    router = torch.randn(8, 16, requires_grad=True)
    leaves = [t.clone().requires_grad_() for t in (x, w_gate_up, w_down)]
    y = ops.moe_layer(leaves[0], router, leaves[1], leaves[2], 2)
    forward = [k.__name__ for k, _, _ in launches]
    assert forward.count("moe_gate_up_kernel") == 1 and forward.count("moe_down_kernel") == 1
    torch.autograd.grad(y, [router, *leaves], grad_y)
    names = [k.__name__ for k, _, _ in launches]
    assert {"matmul_kernel", "moe_route_kernel", "moe_route_backward_kernel", "moe_align_scatter_kernel",
            "moe_combine_kernel", "moe_gate_up_backward_kernel", "moe_expert_starts_kernel",
            "moe_weight_grad_kernel"} <= set(names)
    assert names.count("moe_down_kernel") == 2  # the forward's, and dx's with W_gate_up transposed
    for kernel, args, kwargs in launches:
        text = kernel.ir(*args, **kwargs)
        assert "store" in text and "atomic" not in text, kernel.__name__


def test_backward_reads_a_strided_x_and_int64_ids():
    x, w_gate_up, w_down, weights, ids, grad_y = make_problem(11, 20, 12, 5, 2, 2.0, torch.float32, 12)
    x_t = x.T.contiguous().requires_grad_()  # x is read through the transposed view x_t.T
    leaves = [x_t, *(t.clone().requires_grad_() for t in (w_gate_up, w_down, weights))]
    y = ops.fused_moe(x_t.T, *leaves[1:], ids.long())
    got = torch.autograd.grad(y, leaves, grad_y)
    want = reference_grads(x, w_gate_up, w_down, weights, ids, grad_y, "silu")
    assert_close(got[0], want[0].T.float(), table=FUSED_BACKWARD, msg="dx")
    for g, w in zip(got[1:], want[1:]):
        assert_close(g, w.float(), table=FUSED_BACKWARD)


@pytest.mark.parametrize("wanted", [("x", "weights"), ("w_down",), ("w_gate_up", "x")])
def test_backward_computes_only_the_gradients_asked_for(wanted, monkeypatch):
    """ctx.needs_input_grad reaches the kernels: frozen experts launch no weight-gradient GEMM, a frozen
    router no d(weights); what is computed matches the full backward."""
    tk_kernel = importlib.import_module("tilekit.kernel")
    launches = []
    original = tk_kernel.Launcher.__call__

    def recording(self, *args, **kwargs):
        launches.append((self.kernel.__name__, kwargs))
        return original(self, *args, **kwargs)

    names = ("x", "w_gate_up", "w_down", "weights")
    x, w_gate_up, w_down, weights, ids, grad_y = make_problem(13, 16, 12, 5, 2, 2.0, torch.float32, 14)
    full = [t.clone().requires_grad_() for t in (x, w_gate_up, w_down, weights)]
    want = torch.autograd.grad(ops.fused_moe(*full, ids), full, grad_y)
    leaves = [t.clone().requires_grad_(name in wanted) for name, t in zip(names, (x, w_gate_up, w_down, weights))]
    y = ops.fused_moe(*leaves, ids)
    monkeypatch.setattr(tk_kernel.Launcher, "__call__", recording)
    got = torch.autograd.grad(y, [t for t in leaves if t.requires_grad], grad_y)
    for name, g in zip([n for n in names if n in wanted], got):
        assert torch.equal(g, want[names.index(name)]), name
    weight_grads = [kw for k, kw in launches if k == "moe_weight_grad_kernel"]
    assert len(weight_grads) == ("w_gate_up" in wanted) + ("w_down" in wanted)
    assert sum(k == "moe_down_kernel" for k, _ in launches) == ("x" in wanted)
    [(_, gate_up_kwargs)] = [(k, kw) for k, kw in launches if k == "moe_gate_up_backward_kernel"]
    assert gate_up_kwargs["NEED_WEIGHT_GRAD"] == ("weights" in wanted)
    assert gate_up_kwargs["NEED_H"] == ("w_down" in wanted)
    assert gate_up_kwargs["NEED_GRAD_GATE_UP"] == ("x" in wanted or "w_gate_up" in wanted)
