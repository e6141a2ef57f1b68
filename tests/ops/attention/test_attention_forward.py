"""tilekit::attention against the float64 PyTorch reference: ragged shapes, any D <= 256, MHA/GQA/MQA,
causal with Sq != Skv, windows, softcap, fully masked rows, empty inputs; and the work the causal and
windowed kernels skip (launch statistics on the reference)."""
import math
import warnings

import pytest
import torch
from hypothesis import example, given, settings, strategies as st

import tilekit.ops as tk_ops
from tilekit.ops.attention.kernels import attention_fwd_kernel
from tilekit.ops.attention.op import attention_reference
from tilekit.tolerances import assert_close, op_table

from conftest import cpu_backends

warnings.filterwarnings("ignore", message=".*no dispatch table.*")
TABLE = op_table("attention", "PROPERTY")
BACKENDS = cpu_backends()


def _inputs(seed, B, Hq, Hkv, Sq, Skv, D, dtype):
    gen = torch.Generator().manual_seed(seed)
    make = lambda *shape: (torch.randn(shape, generator=gen, dtype=torch.float64) + 0.1).to(dtype)  # noqa: E731
    return make(B, Hq, Sq, D), make(B, Hkv, Skv, D), make(B, Hkv, Skv, D)


def _check(q, k, v, **kw):
    o, lse = tk_ops.attention(q, k, v, return_lse=True, **kw)
    ro, rlse = attention_reference(q.double(), k.double(), v.double(), return_lse=True, **kw)
    assert o.shape == q.shape and o.dtype == q.dtype and lse.shape == q.shape[:3]
    assert not torch.isnan(o).any() and not torch.isnan(lse).any()
    assert_close(o, ro, dtype=q.dtype, table=TABLE)
    assert torch.equal(torch.isinf(lse), torch.isinf(rlse))  # rows seeing no key: -inf, exactly those
    finite = ~torch.isinf(rlse)
    assert_close(lse[finite].double(), rlse[finite], dtype=q.dtype, table=TABLE)
    assert torch.all(o[torch.isinf(rlse)] == 0)


shapes = st.tuples(st.integers(1, 2), st.sampled_from([(1, 1), (2, 2), (4, 2), (3, 1)]), st.integers(1, 70),
                   st.integers(1, 70), st.sampled_from([8, 16, 24, 64, 80, 96, 128]))
options = st.tuples(st.booleans(), st.sampled_from([None, (5, -1), (0, 3), (7, 0), (2, 2), (-1, 4)]),
                    st.sampled_from([None, 5.0]))


@settings(max_examples=10, deadline=None)
@given(shape=shapes, opts=options, dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
       seed=st.integers(0, 99))
@example(shape=(1, (2, 1), 0, 5, 16), opts=(False, None, None), dtype=torch.float32, seed=0)
@example(shape=(2, (2, 2), 5, 0, 16), opts=(True, None, None), dtype=torch.float16, seed=0)
@example(shape=(1, (4, 1), 40, 20, 80), opts=(True, None, None), dtype=torch.float32, seed=1)  # rows see nothing
def test_forward_matches_float64_reference(shape, opts, dtype, seed):
    B, (Hq, Hkv), Sq, Skv, D = shape
    causal, window, softcap = opts
    with tk_ops.use_backend("reference"):
        _check(*_inputs(seed, B, Hq, Hkv, Sq, Skv, D, dtype), causal=causal, window=window, softcap=softcap)


def test_head_dim_256_and_explicit_scale():
    with tk_ops.use_backend("reference"):
        _check(*_inputs(3, 1, 2, 1, 19, 33, 256, torch.float32), causal=True, scale=0.3)


@pytest.mark.skipif("opencl" not in BACKENDS, reason="OpenCL (PoCL) is not installed here")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", [
    (1, 4, 2, 37, 53, 80, dict(causal=True)),
    (2, 2, 1, 45, 29, 64, dict(causal=False, window=(6, 3), softcap=4.0)),
    (1, 2, 2, 40, 17, 32, dict(causal=True, window=(3, -1))),  # Sq > Skv: first rows see nothing
])
def test_forward_on_opencl(dtype, case):
    B, Hq, Hkv, Sq, Skv, D, kw = case
    with tk_ops.use_backend("opencl"):
        _check(*_inputs(7, B, Hq, Hkv, Sq, Skv, D, dtype), **kw)


@pytest.mark.skipif("triton" not in BACKENDS, reason="the Triton interpreter is not installed here")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_forward_on_triton_interpreter(dtype):
    with tk_ops.use_backend("triton"):
        _check(*_inputs(5, 1, 2, 1, 23, 41, 48, dtype), causal=True, window=(9, -1), softcap=6.0)


def _kv_bytes(stats):
    return stats.tensors["K"].bytes_loaded + stats.tensors["V"].bytes_loaded


def test_causal_skips_masked_key_blocks():
    q, k, v = _inputs(0, 1, 1, 1, 1024, 1024, 16, torch.float16)
    with tk_ops.use_backend("reference"):
        tk_ops.attention(q, k, v)
        full = _kv_bytes(attention_fwd_kernel.last_launch_stats)
        tk_ops.attention(q, k, v, causal=True)
        causal = _kv_bytes(attention_fwd_kernel.last_launch_stats)
    assert full == 2 * 1024 * 16 * 2 * math.ceil(1024 / 64)  # every program reads all of K and V
    assert causal <= 0.55 * full


def test_window_skips_key_blocks_outside_it():
    q, k, v = _inputs(0, 1, 1, 1, 1024, 1024, 16, torch.float16)
    left = 100
    with tk_ops.use_backend("reference"):
        tk_ops.attention(q, k, v)
        full = _kv_bytes(attention_fwd_kernel.last_launch_stats)
        tk_ops.attention(q, k, v, window=(left, 0))
        windowed = _kv_bytes(attention_fwd_kernel.last_launch_stats)
    bm, bn = 64, 64  # the reference's default tiles at this size
    assert windowed <= (left + bm + bn) / 1024 * full


@pytest.mark.parametrize("bad, match", [
    (dict(k=torch.randn(1, 3, 8, 16), v=torch.randn(1, 3, 8, 16)), "multiple"),
    (dict(k=torch.randn(1, 2, 8, 8), v=torch.randn(1, 2, 8, 8)), "D=16"),
    (dict(q=torch.randn(1, 2, 8, 300), k=torch.randn(1, 2, 8, 300), v=torch.randn(1, 2, 8, 300)), "256"),
    (dict(q=torch.randn(2, 8, 16)), "4-D"),
])
def test_bad_inputs_raise_naming_the_argument(bad, match):
    args = {"q": torch.randn(1, 2, 8, 16), "k": torch.randn(1, 2, 8, 16), "v": torch.randn(1, 2, 8, 16)}
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        tk_ops.attention(args["q"], args["k"], args["v"])
    with pytest.raises(TypeError, match="'q'"):
        tk_ops.attention(torch.ones(1, 2, 8, 16, dtype=torch.int32), args["k"], args["v"])


def test_strided_inputs_are_read_in_place():
    q, k, v = _inputs(2, 1, 6, 3, 21, 19, 32, torch.float32)
    qp, kp, vp = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))  # (B, S, H, D) storage
    with tk_ops.use_backend("reference"):
        o = tk_ops.attention(qp, kp, vp, causal=True)
    assert o.is_contiguous()
    assert_close(o, attention_reference(q.double(), k.double(), v.double(), causal=True), dtype=q.dtype,
                 table=TABLE)
