"""fused_moe (forward) against a float64 token-by-token reference written here."""
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings, strategies as st

import tilekit.ops as ops
from tilekit.ops.moe import kernels
from tilekit.tolerances import assert_close, op_table

FUSED = op_table("moe", "FUSED")
SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def moe_by_hand(x, w_gate_up, w_down, weights, ids, activation="silu"):
    """Token by token, slot by slot, in float64."""
    ffn = w_gate_up.shape[1] // 2
    y = torch.zeros(x.shape, dtype=torch.float64)
    for t in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = int(ids[t, j])
            h = w_gate_up[e].double() @ x[t].double()
            gate, up = h[:ffn], h[ffn:]
            if activation == "silu":
                act = gate * torch.sigmoid(gate)
            else:
                act = 0.5 * gate * (1 + torch.tanh(0.7978845608028654 * (gate + 0.044715 * gate ** 3)))
            y[t] += float(weights[t, j]) * (w_down[e].double() @ (act * up))
    return y


def make_problem(tokens, hidden, ffn, experts, top_k, skew, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, hidden, generator=gen).to(dtype)
    w_gate_up = (torch.randn(experts, 2 * ffn, hidden, generator=gen) / hidden ** 0.5).to(dtype)
    w_down = (torch.randn(experts, hidden, ffn, generator=gen) / ffn ** 0.5).to(dtype)
    logits = torch.randn(tokens, experts, generator=gen)
    logits[:, 0] += skew  # an imbalance: expert 0 takes more (at large skew, every token)
    weights, ids = ops.moe_route(logits, top_k)
    return x, w_gate_up, w_down, weights, ids


@st.composite
def problems(draw):
    experts = draw(st.integers(1, 9))
    return dict(tokens=draw(st.sampled_from([0, 1, 5, 19, 37])), hidden=draw(st.integers(3, 40)),
                ffn=draw(st.integers(3, 40)), experts=experts, top_k=draw(st.integers(1, min(4, experts))),
                skew=draw(st.sampled_from([0.0, 2.0, 50.0])),
                dtype=draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16])),
                activation=draw(st.sampled_from(["silu", "gelu"])), seed=draw(st.integers(0, 99)))


def _check(case, backend):
    activation = case.pop("activation")
    x, w_gate_up, w_down, weights, ids = make_problem(**case)
    with ops.use_backend(backend):
        y = ops.fused_moe(x, w_gate_up, w_down, weights, ids, activation=activation)
    assert y.dtype == x.dtype and y.shape == x.shape
    want = moe_by_hand(x, w_gate_up, w_down, weights, ids, activation)
    assert_close(y, want.to(x.dtype), table=FUSED)


@settings(max_examples=15, **SETTINGS)
@given(problems())
@example(dict(tokens=0, hidden=8, ffn=8, experts=4, top_k=2, skew=0.0, dtype=torch.float32, activation="silu",
              seed=0))
def test_fused_reference(case):
    _check(case, "reference")


@pytest.mark.parametrize("backend,dtype", [("opencl", torch.float32), ("triton", torch.float16)])
def test_fused_gpu_backends(backend, dtype):
    _check(dict(tokens=13, hidden=20, ffn=24, experts=5, top_k=2, skew=2.0, dtype=dtype, activation="silu",
                seed=4), backend)


@st.composite
def bf16_problems(draw):
    case = draw(problems())
    return {**case, "dtype": torch.bfloat16, "activation": "silu"}


# bf16 on PoCL: sizes are runtime arguments, so every example runs the same compiled kernels (one SiLU set:
# the CI budget; GELU runs on the reference and the Triton interpreter)
@settings(max_examples=5, **SETTINGS)
@given(bf16_problems())
@example(dict(tokens=0, hidden=8, ffn=8, experts=4, top_k=2, skew=0.0, dtype=torch.bfloat16, activation="silu",
              seed=0))
@example(dict(tokens=37, hidden=33, ffn=35, experts=8, top_k=1, skew=1e4, dtype=torch.bfloat16, activation="silu",
              seed=2))  # every token to expert 0
def test_fused_opencl_bf16(case):
    from tilekit.backends.opencl import available
    ok, why = available()
    if not ok:
        pytest.skip(f"OpenCL unavailable: {why}")
    _check(case, "opencl")


def test_fused_all_tokens_to_one_expert():
    _check(dict(tokens=40, hidden=16, ffn=12, experts=8, top_k=1, skew=1e4, dtype=torch.float32,
                activation="silu", seed=5), "reference")


def test_fused_work_saved_and_deterministic():
    """2 grouped-GEMM launches, an F-wide intermediate, no program past num_padded loads a weight, and two
    runs are bitwise equal."""
    x, w_gate_up, w_down, weights, ids = make_problem(9, 16, 24, 8, 2, 1e4, torch.float32, 6)
    y1 = ops.fused_moe(x, w_gate_up, w_down, weights, ids)
    up, down = kernels.moe_gate_up_kernel.last_launch_stats, kernels.moe_down_kernel.last_launch_stats
    sorted_ids, expert_ids, num_padded = ops.moe_align(ids, 8, 16)  # the CPU default BM at this size
    used_blocks = int(num_padded) // 16
    assert up.tensors["Inter"].elements_stored == ids.numel() * 24  # F wide: one value per slot and column
    # only the used blocks load weights: each its expert's 2F x H (gate and up) and H x F, once
    assert up.tensors["WGateUp"].elements_loaded == used_blocks * 2 * 24 * 16
    assert down.tensors["WDown"].elements_loaded == used_blocks * 16 * 24
    assert up.programs == expert_ids.numel() * 1
    y2 = ops.fused_moe(x, w_gate_up, w_down, weights, ids)
    assert torch.equal(y1, y2)


def test_fused_rejects_bad_arguments():
    x, w_gate_up, w_down, weights, ids = make_problem(3, 8, 6, 4, 2, 0.0, torch.float32, 7)
    with pytest.raises(ValueError, match="w_down"):
        ops.fused_moe(x, w_gate_up, w_down[:, :, :5], weights, ids)
    with pytest.raises(TypeError, match="w_gate_up"):
        ops.fused_moe(x, w_gate_up.half(), w_down, weights, ids)
    with pytest.raises(ValueError, match="activation"):
        ops.fused_moe(x, w_gate_up, w_down, weights, ids, activation="relu")


def test_fused_opcheck_and_compile():
    args = make_problem(5, 8, 6, 4, 2, 0.0, torch.float32, 8)
    torch.library.opcheck(torch.ops.tilekit.fused_moe.default, (*args, "silu"),
                          test_utils=("test_schema", "test_faketensor"))
    compiled = torch.compile(lambda *a: ops.fused_moe(*a), fullgraph=True)
    assert torch.equal(compiled(*args), ops.fused_moe(*args))


def test_moe_layer_matches_route_then_by_hand():
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(11, 16, generator=gen)
    router = torch.randn(8, 16, generator=gen)
    _, w_gate_up, w_down, _, _ = make_problem(11, 16, 12, 8, 2, 0.0, torch.float32, 11)
    y = ops.moe_layer(x, router, w_gate_up, w_down, 2, scoring="sigmoid", num_groups=4, topk_groups=2)
    weights, ids = ops.moe_route_reference(x.double() @ router.double().T, 2, scoring="sigmoid", num_groups=4,
                                           topk_groups=2)
    assert_close(y, moe_by_hand(x, w_gate_up, w_down, weights, ids).float(), table=FUSED)
