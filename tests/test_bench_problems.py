"""The reference Models of tilekit's bench problems, checked against independent float64 / loop
formulations on ragged, non-power-of-two shapes with random inputs."""
import math

import pytest
import torch

from tilekit.bench.discovery import TILEKIT_PROBLEMS_DIR, discover_problems
from tilekit.bench.worker import apply_overrides, load_module, size_overrides
from tilekit.tolerances import PROPERTY, for_dtype


def load_problem(relative: str, **overrides):
    module = load_module(str(TILEKIT_PROBLEMS_DIR / relative), "test")
    apply_overrides(module, overrides)
    return module


def build(module, seed=0):
    torch.manual_seed(seed)
    model = module.Model(*module.get_init_inputs())
    torch.manual_seed(seed + 1)
    return model, module.get_inputs()


def assert_matches(actual, expected64, dtype):
    """Within the PROPERTY tolerance of ``dtype``, and the expectation is not trivially ~0."""
    assert expected64.dtype == torch.float64
    assert expected64.abs().mean() > 1e-3, "degenerate test: expected output is ~0"
    atol, rtol = for_dtype(dtype, PROPERTY)
    assert actual.dtype == dtype
    torch.testing.assert_close(actual.double(), expected64, atol=atol, rtol=rtol)


# ---- selective scan --------------------------------------------------------------------------
def selective_scan_loop(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """mamba_ssm's selective_scan semantics as the plain sequential recurrence, in float64."""
    u, delta, A, B, C, D, z, delta_bias = (t.double() for t in (u, delta, A, B, C, D, z, delta_bias))
    delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = torch.log1p(torch.exp(delta))
    batch, dim, length = u.shape
    state = torch.zeros(batch, dim, A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(length):
        d_t = delta[:, :, t, None]
        state = torch.exp(d_t * A) * state + d_t * B[:, None, :, t] * u[:, :, t, None]
        ys.append((state * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1) + u * D[:, None]
    return y * (z * torch.sigmoid(z))


@pytest.mark.parametrize("dtype,softplus,chunk", [("float32", True, 8), ("bfloat16", True, 16),
                                                  ("float16", False, 32), ("float32", False, 64)])
def test_selective_scan_matches_sequential_loop(dtype, softplus, chunk):
    # SEQLEN 45 is not a multiple of the chunk: the last chunk is ragged.
    ssm = load_problem("selective_scan/selective_scan.py", BATCH=2, DIM=7, DSTATE=5, SEQLEN=45, DTYPE=dtype,
                       DELTA_SOFTPLUS=softplus, CHUNK=chunk)
    model, inputs = build(ssm)
    assert model.chunk == chunk and model.delta_softplus == softplus
    expected = selective_scan_loop(*inputs, delta_softplus=softplus)
    with torch.no_grad():
        actual = model(*inputs)
    assert_matches(actual, expected, getattr(torch, dtype))


def test_selective_scan_state_carries_across_chunks():
    """A long memory (tiny decay) must reach later chunks: the last output depends on the first input."""
    ssm = load_problem("selective_scan/selective_scan.py", BATCH=1, DIM=3, DSTATE=4, SEQLEN=40, DTYPE="float32",
                       CHUNK=8)
    model, inputs = build(ssm)
    u, delta, A, B, C, D, z, delta_bias = inputs
    A = A * 1e-3
    perturbed = u.clone()
    perturbed[:, :, 0] += 1.0
    with torch.no_grad():
        base = model(u, delta, A, B, C, D, z, delta_bias)
        moved = model(perturbed, delta, A, B, C, D, z, delta_bias)
    assert (moved[:, :, -1] - base[:, :, -1]).abs().max() > 1e-4
    expected = selective_scan_loop(perturbed, delta, A, B, C, D, z, delta_bias, delta_softplus=True)
    assert_matches(moved, expected, torch.float32)


# ---- low-bit linear --------------------------------------------------------------------------
def explicit_unpack(qweight, bits, cols):
    """Read the documented bit stream one bit at a time with Python integers."""
    codes = []
    for row in qweight.tolist():
        words = [w & 0xFFFFFFFF for w in row]
        row_codes = []
        for k in range(cols):
            code = 0
            for j in range(bits):
                i = k * bits + j
                code |= ((words[i // 32] >> (i % 32)) & 1) << j
            row_codes.append(code)
        codes.append(row_codes)
    return torch.tensor(codes, dtype=torch.float64)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_lowbit_linear_matches_explicit_unpacking(bits, dtype):
    # K*bits is not a multiple of 32 for 3, 5 and 6 bits (90*3 = 270): the last word is partial.
    M, K, N, GROUP = 11, 90, 7, 30
    lowbit = load_problem("lowbit_linear/lowbit_linear.py", M=M, K=K, N=N, BITS=bits, GROUP=GROUP, DTYPE=dtype)
    model, (x,) = build(lowbit, seed=bits)
    assert model.qweight.dtype == torch.int32
    assert model.qweight.shape == (N, math.ceil(K * bits / 32))
    codes = explicit_unpack(model.qweight, bits, K)
    used_bits = 0
    for code in codes.long().flatten().tolist():
        used_bits |= code
    assert used_bits == 2**bits - 1, "every bit of the codes should be exercised"
    weight = (codes - 2 ** (bits - 1)) * model.scales.double().repeat_interleave(GROUP, dim=1)
    expected = x.double() @ weight.t()
    with torch.no_grad():
        actual = model(x)
    assert_matches(actual, expected, getattr(torch, dtype))


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 6, 7, 8])
def test_lowbit_pack_roundtrip(bits):
    lowbit = load_problem("lowbit_linear/lowbit_linear.py")
    torch.manual_seed(bits)
    codes = torch.randint(0, 2**bits, (5, 37))
    packed = lowbit.pack_codes(codes, bits)
    assert packed.shape == (5, math.ceil(37 * bits / 32))
    assert torch.equal(explicit_unpack(packed, bits, 37).long(), codes)
    assert torch.equal(lowbit.unpack_codes(packed, bits, 37), codes)


# ---- attention -------------------------------------------------------------------------------
def attention_float64(q, k, v, causal):
    q, k, v = q.double(), k.double(), v.double()
    heads_q, heads_kv = q.shape[1], k.shape[1]
    out = torch.empty(q.shape, dtype=torch.float64)
    for h in range(heads_q):
        kv = h // (heads_q // heads_kv)
        scores = q[:, h] @ k[:, kv].transpose(-1, -2) / math.sqrt(q.shape[-1])
        if causal:
            sq, skv = scores.shape[-2:]
            future = torch.arange(skv)[None, :] > torch.arange(sq)[:, None]
            scores = scores.masked_fill(future, -math.inf)
        out[:, h] = torch.softmax(scores, dim=-1) @ v[:, kv]
    return out


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("heads_q,heads_kv", [(6, 6), (6, 2), (6, 1)])
@pytest.mark.parametrize("head_dim,dtype", [(64, "float16"), (128, "bfloat16")])
def test_attention_matches_explicit_softmax(causal, heads_q, heads_kv, head_dim, dtype):
    attention = load_problem("attention/attention.py", BATCH=2, SEQ_Q=37, SEQ_KV=37, HEADS_Q=heads_q,
                             HEADS_KV=heads_kv, HEAD_DIM=head_dim, CAUSAL=causal, DTYPE=dtype)
    model, (q, k, v) = build(attention)
    with torch.no_grad():
        actual = model(q, k, v)
    assert_matches(actual, attention_float64(q, k, v, causal), getattr(torch, dtype))


def test_attention_decode_and_causal_mask_matter():
    attention = load_problem("attention/attention.py", BATCH=3, SEQ_Q=1, SEQ_KV=53, HEADS_Q=4, HEADS_KV=2,
                             HEAD_DIM=64, CAUSAL=False, DTYPE="float16")
    model, (q, k, v) = build(attention)
    with torch.no_grad():
        assert_matches(model(q, k, v), attention_float64(q, k, v, False), torch.float16)
    # The mask changes the answer (so the causal tests above are not vacuous).
    q, k, v = (torch.randn(1, 2, 9, 64) for _ in range(3))
    assert (attention_float64(q, k, v, True) - attention_float64(q, k, v, False)).abs().max() > 0.1
    with pytest.raises(ValueError, match="multiple"):
        load_problem("attention/attention.py", HEADS_Q=6, HEADS_KV=4).get_init_inputs()


# ---- MoE -------------------------------------------------------------------------------------
def moe_per_token(model, x):
    """Route and run each token on its own, in float64."""
    x64 = x.double()
    router, bias = model.router.double(), model.bias.double()
    w_gate, w_up, w_down = model.w_gate.double(), model.w_up.double(), model.w_down.double()
    out = torch.zeros_like(x64)
    for t in range(x64.shape[0]):
        probs = torch.softmax(router @ x64[t] + bias, dim=0)
        weights, experts = probs.topk(model.top_k)
        weights = weights / weights.sum()
        for weight, e in zip(weights, experts.tolist()):
            hidden = torch.nn.functional.silu(w_gate[e] @ x64[t]) * (w_up[e] @ x64[t])
            out[t] += weight * (w_down[e] @ hidden)
    return out


@pytest.mark.parametrize("experts,top_k,skew,dtype", [
    (8, 2, 0.0, "float32"), (8, 1, 2.0, "float32"), (13, 2, 1.0, "bfloat16"), (64, 8, 0.0, "float32"),
    (64, 8, 1.0, "float16"),
])
def test_moe_matches_per_token_loop(experts, top_k, skew, dtype):
    moe = load_problem("moe/moe_layer.py", TOKENS=23, HIDDEN=20, FFN=12, EXPERTS=experts, TOP_K=top_k,
                       SKEW=skew, DTYPE=dtype)
    model, (x,) = build(moe)
    with torch.no_grad():
        actual = model(x)
        expected = moe_per_token(model, x)
    assert_matches(actual, expected, getattr(torch, dtype))


def test_moe_skewed_routing_is_skewed():
    def first_expert_share(skew):
        moe = load_problem("moe/moe_layer.py", TOKENS=400, HIDDEN=16, FFN=8, EXPERTS=8, TOP_K=1, SKEW=skew,
                           DTYPE="float32")
        model, (x,) = build(moe)
        logits = x @ model.router.t() + model.bias
        return (logits.argmax(-1) == 0).float().mean().item()

    assert first_expert_share(0.0) < 0.3          # balanced: about 1/8
    assert first_expert_share(2.0) > 0.5          # skewed: expert 0 takes most tokens


# ---- matmul and softmax ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_gemm_and_softmax_references(dtype):
    gemm = load_problem("matmul/gemm.py", M=37, K=51, N=29, DTYPE=dtype)
    model, (a, b) = build(gemm)
    assert_matches(model(a, b), a.double() @ b.double(), getattr(torch, dtype))
    softmax = load_problem("softmax/softmax.py", ROWS=19, COLS=301, DTYPE=dtype)
    model, (x,) = build(softmax)
    x64 = x.double()
    e = torch.exp(x64 - x64.max(dim=-1, keepdim=True).values)
    assert_matches(model(x), e / e.sum(dim=-1, keepdim=True), getattr(torch, dtype))


# ---- every shipped variant is well formed ----------------------------------------------------
def test_every_variant_has_a_small_quick_size():
    problems = discover_problems(None, warn=lambda message: None)
    families = {p.family for p in problems}
    assert {"matmul", "softmax", "attention", "moe", "selective_scan", "lowbit_linear"} <= families
    for problem in problems:
        module = load_module(str(problem.path), "test")
        overrides = size_overrides(module, problem.variant, quick=True)
        apply_overrides(module, overrides)
        torch.manual_seed(0)
        module.get_init_inputs()
        inputs = module.get_inputs()
        elements = sum(t.numel() for t in inputs if isinstance(t, torch.Tensor))
        assert 0 < elements < 300_000, f"{problem.id}: quick inputs have {elements} elements"
        assert all(torch.isfinite(t).all() for t in inputs if isinstance(t, torch.Tensor) and t.is_floating_point())
