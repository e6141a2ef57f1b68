"""attention_varlen (forward) equals running each packed sequence alone through attention, and launches
only the programs that hold rows of a sequence's own."""
import warnings

import pytest
import torch
from hypothesis import example, given, settings, strategies as st

import tilekit.ops as tk_ops
from tilekit.ops.attention import attention_varlen
from tilekit.ops.attention.kernels import attention_varlen_fwd_kernel
from tilekit.tolerances import assert_close, op_table

warnings.filterwarnings("ignore", message=".*no dispatch table.*")
TABLE = op_table("attention", "PROPERTY")


def _packed(seed, lens_q, lens_k, Hq, Hkv, D, dtype):
    gen = torch.Generator().manual_seed(seed)
    make = lambda n, h: (torch.randn(n, h, D, generator=gen, dtype=torch.float64) + 0.1).to(dtype)  # noqa: E731
    cu = lambda lens: torch.tensor([0] + list(torch.tensor(lens).cumsum(0).tolist()), dtype=torch.int32)  # noqa: E731
    return make(sum(lens_q), Hq), make(sum(lens_k), Hkv), make(sum(lens_k), Hkv), cu(lens_q), cu(lens_k)


@settings(max_examples=8, deadline=None)
@given(lens=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=3),
       heads=st.sampled_from([(2, 1), (2, 2)]), causal=st.booleans(), window=st.sampled_from([None, (4, 2)]),
       dtype=st.sampled_from([torch.float32, torch.float16]), seed=st.integers(0, 9))
@example(lens=[(0, 5), (7, 0), (9, 12)], heads=(2, 1), causal=True, window=None, dtype=torch.float32, seed=0)
def test_varlen_equals_each_sequence_alone(lens, heads, causal, window, dtype, seed):
    lens_q, lens_k = [a for a, _ in lens], [b for _, b in lens]
    Hq, Hkv = heads
    q, k, v, cu_q, cu_k = _packed(seed, lens_q, lens_k, Hq, Hkv, 16, dtype)
    with tk_ops.use_backend("reference"):
        o, lse = attention_varlen(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), causal=causal, window=window,
                                  return_lse=True)
        assert o.shape == q.shape and lse.shape == (Hq, q.shape[0])
        for i in range(len(lens)):
            qs, ks = slice(cu_q[i], cu_q[i + 1]), slice(cu_k[i], cu_k[i + 1])
            alone = lambda t, s: t[s].transpose(0, 1)[None]  # noqa: E731
            want, want_lse = tk_ops.attention(alone(q, qs), alone(k, ks), alone(v, ks), causal=causal,
                                              window=window, return_lse=True)
            assert_close(o[qs], want[0].transpose(0, 1), dtype=dtype, table=TABLE)
            assert torch.equal(torch.isinf(lse[:, qs]), torch.isinf(want_lse[0]))
            assert not torch.isnan(o).any()


def test_varlen_runs_only_the_programs_of_each_sequence():
    lens = [100, 3, 64, 0]
    q, k, v, cu_q, cu_k = _packed(0, lens, lens, 2, 2, 16, torch.float16)
    with tk_ops.use_backend("reference"):
        attention_varlen(q, k, v, cu_q, cu_k, max(lens), max(lens), causal=True)
    stats = attention_varlen_fwd_kernel.last_launch_stats
    bm = 64  # the reference's default BM at max_seqlen 100
    assert stats.tensors["Q"].elements_loaded == sum(lens) * 2 * 16  # no padding rows read
    # causal, Sq = Skv: query block i of a sequence visits key blocks 0..i; blocks past a sequence's end none
    assert stats.loop_iterations == sum(i + 1 for n in lens for i in range(-(-n // bm))) * 2


def test_varlen_checks_its_inputs():
    q, k, v, cu_q, cu_k = _packed(0, [4, 5], [4, 5], 2, 2, 16, torch.float32)
    with pytest.raises(TypeError, match="int32"):
        attention_varlen(q, k, v, cu_q.long(), cu_k, 5, 5)
    with pytest.raises(ValueError, match=r"cu_seqlens_q\[-1\]"):
        attention_varlen(q[:8], k, v, cu_q, cu_k, 5, 5)
    with pytest.raises(ValueError, match="max_seqlen_k"):
        attention_varlen(q, k, v, cu_q, cu_k, 5, 4)
