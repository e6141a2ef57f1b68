"""Gradients of tilekit::attention (dq, dk, dv) against autograd of the float64 reference; gradcheck;
opcheck and torch.compile(fullgraph=True) of the torch ops; the dK/dV kernel's determinism."""
import warnings

import pytest
import torch
from hypothesis import example, given, settings, strategies as st

import tilekit.ops as tk_ops
from tilekit.ops.attention.op import attention_reference
from tilekit.tolerances import assert_close, op_table

warnings.filterwarnings("ignore", message=".*no dispatch table.*")
TABLE = op_table("attention", "BACKWARD")


def _inputs(seed, B, Hq, Hkv, Sq, Skv, D, dtype):
    gen = torch.Generator().manual_seed(seed)
    make = lambda *shape: (torch.randn(shape, generator=gen, dtype=torch.float64) + 0.1).to(dtype)  # noqa: E731
    return [make(B, Hq, Sq, D).requires_grad_(), make(B, Hkv, Skv, D).requires_grad_(),
            make(B, Hkv, Skv, D).requires_grad_()], make(B, Hq, Sq, D)


def _grads(fn, tensors, grad, **kw):
    out = fn(*tensors, **kw)
    return torch.autograd.grad(out, tensors, grad)


@settings(max_examples=6, deadline=None)
@given(shape=st.tuples(st.sampled_from([(1, 1), (2, 1), (4, 2)]), st.integers(1, 45), st.integers(1, 45),
                       st.sampled_from([16, 40, 64])),
       opts=st.tuples(st.booleans(), st.sampled_from([None, (4, -1), (3, 2)]), st.sampled_from([None, 3.0])),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]), seed=st.integers(0, 99))
@example(shape=((2, 1), 0, 7, 16), opts=(True, None, None), dtype=torch.float32, seed=0)
@example(shape=((2, 1), 30, 12, 16), opts=(True, None, None), dtype=torch.float32, seed=0)  # masked rows
def test_gradients_match_float64_autograd(shape, opts, dtype, seed):
    (Hq, Hkv), Sq, Skv, D = shape
    causal, window, softcap = opts
    tensors, grad = _inputs(seed, 1, Hq, Hkv, Sq, Skv, D, dtype)
    kw = dict(causal=causal, window=window, softcap=softcap)
    with tk_ops.use_backend("reference"):
        got = _grads(tk_ops.attention, tensors, grad, **kw)
    wide = [t.detach().double().requires_grad_() for t in tensors]
    want = _grads(attention_reference, wide, grad.double(), **kw)
    for name, g, w, t in zip("qkv", got, want, tensors):
        assert g.shape == t.shape and g.dtype == t.dtype, name
        assert not torch.isnan(g).any(), name
        assert_close(g, w, dtype=dtype, table=TABLE, msg=f"d{name}")


@pytest.mark.parametrize("kw", [dict(causal=True), dict(window=(2, 1), softcap=2.0)])
def test_gradcheck_float64(kw):
    tensors, _ = _inputs(1, 1, 2, 1, 5, 7, 4, torch.float64)
    with tk_ops.use_backend("reference"):
        assert torch.autograd.gradcheck(lambda q, k, v: tk_ops.attention(q, k, v, **kw), tensors,
                                        eps=1e-6, atol=1e-4, rtol=1e-3)


def test_backward_is_deterministic():
    tensors, grad = _inputs(4, 1, 4, 1, 33, 29, 16, torch.float32)
    with tk_ops.use_backend("reference"):
        first = _grads(tk_ops.attention, tensors, grad, causal=True)
        second = _grads(tk_ops.attention, tensors, grad, causal=True)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("permuted", [False, True])
def test_opcheck(permuted):
    tensors, _ = _inputs(2, 1, 4, 2, 9, 11, 16, torch.float32)
    if permuted:
        tensors = [t.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_() for t in tensors]
    with tk_ops.use_backend("reference"):
        torch.library.opcheck(torch.ops.tilekit.attention.default, (*tensors, True, 0.25, [3, -1], None))


def test_torch_compile_fullgraph_forward_and_backward():
    tensors, grad = _inputs(3, 1, 2, 1, 13, 17, 16, torch.float32)
    compiled = torch.compile(lambda q, k, v: tk_ops.attention(q, k, v, causal=True), fullgraph=True,
                             backend="eager")
    with tk_ops.use_backend("reference"):
        got = _grads(compiled, tensors, grad)
    want = _grads(lambda q, k, v: attention_reference(q, k, v, causal=True),
                  [t.detach().double().requires_grad_() for t in tensors], grad.double())
    for g, w in zip(got, want):
        assert_close(g, w, dtype=torch.float32, table=TABLE)
