"""attention_decode over a paged cache equals dense attention over the gathered cache, for shuffled block
tables with a partly full last block; every num_splits agrees; each touched page is read once per group."""
import warnings

import pytest
import torch

import tilekit.ops as tk_ops
from tilekit.ops.attention.decode import attention_decode, attention_decode_kernel
from tilekit.ops.attention.op import attention_reference
from tilekit.tolerances import assert_close, op_table

warnings.filterwarnings("ignore", message=".*no dispatch table.*")
TABLE = op_table("attention", "PROPERTY")


def _paged(seed, lens, Hq, Hkv, D, page, dtype):
    gen = torch.Generator().manual_seed(seed)
    pages = [-(-n // page) for n in lens]
    nb = sum(pages) + 3
    kc = torch.randn(nb, page, Hkv, D, generator=gen).to(dtype)
    vc = torch.randn(nb, page, Hkv, D, generator=gen).to(dtype)
    order = torch.randperm(nb, generator=gen)
    table = torch.full((len(lens), max(pages) + 1), -1, dtype=torch.int32)
    used = 0
    for b, n in enumerate(pages):
        table[b, :n] = order[used:used + n].to(torch.int32)
        used += n
    q = torch.randn(len(lens), Hq, D, generator=gen).to(dtype)
    return q, kc, vc, table, torch.tensor(lens, dtype=torch.int32)


def _dense(q, kc, vc, table, lens, **kw):
    outs = []
    for b, n in enumerate(lens.tolist()):
        pages = table[b, :-(-n // kc.shape[1])].long()
        k = kc[pages].reshape(-1, kc.shape[2], kc.shape[3])[:n].transpose(0, 1)[None].double()
        v = vc[pages].reshape(-1, vc.shape[2], vc.shape[3])[:n].transpose(0, 1)[None].double()
        outs.append(attention_reference(q[b][None, :, None].double(), k, v, **kw)[0, :, 0]
                    if n else torch.zeros(q.shape[1:], dtype=torch.float64))
    return torch.stack(outs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("heads, window", [((4, 1), None), ((8, 2), (20, 0)), ((2, 2), None)])
def test_decode_matches_dense_for_every_split_count(dtype, heads, window):
    Hq, Hkv = heads
    q, kc, vc, table, lens = _paged(1, [37, 1, 64, 0, 90], Hq, Hkv, 32, 16, dtype)
    want = _dense(q, kc, vc, table, lens, window=window)
    with tk_ops.use_backend("reference"):
        for splits in (None, 1, 2, 3, 7):
            got = attention_decode(q, kc, vc, table, lens, window=window, num_splits=splits)
            assert not torch.isnan(got).any()
            assert_close(got, want, dtype=dtype, table=TABLE, msg=f"num_splits={splits}")
    assert torch.all(got[3] == 0)  # seq_lens 0


def test_gqa_decode_reads_each_page_once_per_group():
    q, kc, vc, table, lens = _paged(2, [50, 33], 8, 2, 16, 16, torch.float16)
    with tk_ops.use_backend("reference"):
        attention_decode(q, kc, vc, table, lens, num_splits=2)
    pages_touched = sum(-(-n // 16) for n in lens.tolist())
    stats = attention_decode_kernel.last_launch_stats
    assert stats.tensors["KC"].elements_loaded == pages_touched * 16 * 2 * 16  # pages x page x Hkv x D


def test_decode_torch_op_opcheck():
    q, kc, vc, table, lens = _paged(3, [20, 5], 4, 2, 16, 16, torch.float32)
    with tk_ops.use_backend("reference"):
        torch.library.opcheck(torch.ops.tilekit.attention_decode.default, (q, kc, vc, table, lens, 0.25, -1, None, 2))
