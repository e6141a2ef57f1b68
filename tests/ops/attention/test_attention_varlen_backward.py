"""Gradients of tilekit::attention_varlen (dq, dk, dv over packed sequences) against autograd of a float64
per-sequence reference, for ragged lengths with zero-length sequences, GQA, causal, windows and softcap;
gradcheck at a tiny size; opcheck of the torch op (its autograd registration included)."""
import warnings

import pytest
import torch
from hypothesis import example, given, settings, strategies as st

import tilekit.ops as tk_ops
from tilekit.ops.attention.op import attention_reference
from tilekit.tolerances import assert_close, op_table

from conftest import cpu_backends

warnings.filterwarnings("ignore", message=".*no dispatch table.*")
TABLE = op_table("attention", "BACKWARD")
BACKENDS = cpu_backends()


def _packed(seed, lens_q, lens_k, Hq, Hkv, D, dtype):
    gen = torch.Generator().manual_seed(seed)
    make = lambda n, h: (torch.randn(n, h, D, generator=gen, dtype=torch.float64) + 0.1).to(dtype)  # noqa: E731
    cu = lambda lens: torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)  # noqa: E731
    q, k, v = make(sum(lens_q), Hq), make(sum(lens_k), Hkv), make(sum(lens_k), Hkv)
    return [t.requires_grad_() for t in (q, k, v)], make(sum(lens_q), Hq), cu(lens_q), cu(lens_k)


def varlen_reference(q, k, v, cu_q, cu_k, **kw):
    """Each sequence alone through the float64 dense reference, packed back (differentiable)."""
    outs = []
    for i in range(cu_q.shape[0] - 1):
        qs, ks = slice(int(cu_q[i]), int(cu_q[i + 1])), slice(int(cu_k[i]), int(cu_k[i + 1]))
        if qs.stop == qs.start:
            continue
        if ks.stop == ks.start:  # no keys: o = 0, and the inputs still take (zero) gradients
            outs.append(q[qs] * 0.0)
            continue
        alone = lambda t, s: t[s].transpose(0, 1)[None]  # noqa: E731
        outs.append(attention_reference(alone(q, qs), alone(k, ks), alone(v, ks), **kw)[0].transpose(0, 1))
    return torch.cat(outs) if outs else q * 0.0


def _grads(out, tensors, grad):
    return torch.autograd.grad(out, tensors, grad, allow_unused=True)


@settings(max_examples=4, deadline=None)
@given(lens=st.lists(st.tuples(st.integers(0, 37), st.integers(0, 37)), min_size=1, max_size=3),
       heads=st.sampled_from([(2, 1), (2, 2), (4, 2)]),
       opts=st.tuples(st.booleans(), st.sampled_from([None, (4, 2), (3, -1)]), st.sampled_from([None, 4.0])),
       D=st.sampled_from([16, 24, 32]), dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
       seed=st.integers(0, 9))
@example(lens=[(0, 5), (7, 0), (9, 12), (0, 0)], heads=(2, 1), opts=(True, None, None), D=16,
         dtype=torch.float32, seed=0)  # zero-length queries, zero-length keys, both
@example(lens=[(20, 8), (3, 30)], heads=(4, 2), opts=(True, (2, -1), 3.0), D=24, dtype=torch.float32,
         seed=1)  # causal with Sq > Skv: rows that see nothing
def test_varlen_gradients_match_float64_autograd(lens, heads, opts, D, dtype, seed):
    lens_q, lens_k = [a for a, _ in lens], [b for _, b in lens]
    (Hq, Hkv), (causal, window, softcap) = heads, opts
    tensors, grad, cu_q, cu_k = _packed(seed, lens_q, lens_k, Hq, Hkv, D, dtype)
    kw = dict(causal=causal, window=window, softcap=softcap)
    with tk_ops.use_backend("reference"):
        out = tk_ops.attention_varlen(*tensors, cu_q, cu_k, max(lens_q), max(lens_k), **kw)
        got = _grads(out, tensors, grad)
    wide = [t.detach().double().requires_grad_() for t in tensors]
    want = _grads(varlen_reference(*wide, cu_q, cu_k, **kw), wide, grad.double())
    for name, g, w, t in zip("qkv", got, want, tensors):
        w = torch.zeros_like(wide[0 if name == "q" else 1]) if w is None else w
        assert g.shape == t.shape and g.dtype == t.dtype, name
        assert not torch.isnan(g).any(), name
        assert_close(g, w, dtype=dtype, table=TABLE, msg=f"d{name}")
    # keys of a sequence with no queries, and keys no query sees, get exactly zero gradient
    for i, (nq, nk) in enumerate(lens):
        if nq == 0 and nk:
            ks = slice(int(cu_k[i]), int(cu_k[i + 1]))
            assert torch.all(got[1][ks] == 0) and torch.all(got[2][ks] == 0)


def test_varlen_gradcheck_float64():
    tensors, _, cu_q, cu_k = _packed(3, [2, 0, 3], [3, 1, 4], 2, 1, 2, torch.float64)
    fn = lambda q, k, v: tk_ops.attention_varlen(q, k, v, cu_q, cu_k, 3, 4, causal=True, window=(3, 1),  # noqa: E731
                                                 softcap=2.0)
    with tk_ops.use_backend("reference"):
        assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("permuted", [False, True])
def test_varlen_opcheck(permuted):
    tensors, _, cu_q, cu_k = _packed(2, [5, 0, 9], [7, 3, 4], 4, 2, 16, torch.float32)
    if permuted:  # (H, total, D) storage read as (total, H, D)
        tensors = [t.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_() for t in tensors]
    with tk_ops.use_backend("reference"):
        torch.library.opcheck(torch.ops.tilekit.attention_varlen.default,
                              (*tensors, cu_q, cu_k, 9, 7, True, 0.25, [3, -1], None))


def test_varlen_torch_compile_fullgraph_forward_and_backward():
    tensors, grad, cu_q, cu_k = _packed(6, [6, 11], [9, 4], 2, 1, 16, torch.float32)
    fn = lambda q, k, v: tk_ops.attention_varlen(q, k, v, cu_q, cu_k, 11, 9, causal=True)  # noqa: E731
    with tk_ops.use_backend("reference"):
        got = _grads(torch.compile(fn, fullgraph=True, backend="eager")(*tensors), tensors, grad)
    wide = [t.detach().double().requires_grad_() for t in tensors]
    want = _grads(varlen_reference(*wide, cu_q, cu_k, causal=True), wide, grad.double())
    for g, w in zip(got, want):
        assert_close(g, w, dtype=torch.float32, table=TABLE)


def test_varlen_backward_is_deterministic_and_empty_inputs_give_zero_grads():
    tensors, grad, cu_q, cu_k = _packed(4, [33, 17], [29, 40], 4, 1, 16, torch.float32)
    with tk_ops.use_backend("reference"):
        runs = [_grads(tk_ops.attention_varlen(*tensors, cu_q, cu_k, 33, 40, causal=True), tensors, grad)
                for _ in range(2)]
        assert all(torch.equal(a, b) for a, b in zip(*runs))
        empty, grad0, cu0, cuk0 = _packed(0, [0, 0], [3, 0], 2, 1, 16, torch.float32)
        got = _grads(tk_ops.attention_varlen(*empty, cu0, cuk0, 0, 3), empty, grad0)
    assert [g.shape for g in got] == [t.shape for t in empty] and all(torch.all(g == 0) for g in got)


@pytest.mark.skipif("opencl" not in BACKENDS, reason="OpenCL (PoCL) is not installed here")
@pytest.mark.parametrize("dtype", [torch.bfloat16])  # fp32 and fp16 run on the reference (CI budget)
def test_varlen_backward_on_opencl(dtype):
    tensors, grad, cu_q, cu_k = _packed(5, [19, 0, 11], [23, 6, 9], 4, 2, 32, dtype)
    kw = dict(causal=True, window=(7, -1))
    with tk_ops.use_backend("opencl"):
        got = _grads(tk_ops.attention_varlen(*tensors, cu_q, cu_k, 19, 23, **kw), tensors, grad)
    wide = [t.detach().double().requires_grad_() for t in tensors]
    want = _grads(varlen_reference(*wide, cu_q, cu_k, **kw), wide, grad.double())
    for name, g, w in zip("qkv", got, want):
        assert g.dtype == dtype
        assert_close(g, w, dtype=dtype, table=TABLE, msg=f"d{name}")
