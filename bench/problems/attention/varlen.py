"""Variable-length causal attention over packed sequences (flash-attn's varlen layout), GQA.

Inputs: q (total, HEADS_Q, D), k and v (total, HEADS_KV, D) in DTYPE, where BATCH sequences of ragged lengths
(one of a single token) are packed along dim 0, and cu_seqlens (BATCH + 1,) int32, the cumulative offsets;
the constructor takes MAX_LEN, the longest sequence's bound.
Output (total, HEADS_Q, D). The reference runs scaled_dot_product_attention (causal) on each sequence alone.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH, MAX_LEN, HEADS_Q, HEADS_KV, HEAD_DIM = 8, 4096, 32, 8, 128
DTYPE = "bfloat16"

QUICK = {"BATCH": 3, "MAX_LEN": 70, "HEADS_Q": 4, "HEADS_KV": 2, "HEAD_DIM": 64}
VARIANTS = {"llama3_8b_varlen_causal_bf16": {}}


class Model(nn.Module):
    def __init__(self, max_seqlen: int):
        super().__init__()
        self.max_seqlen = max_seqlen  # every sequence is at most this long (flash-attn's max_seqlen)

    def forward(self, q, k, v, cu_seqlens):
        group = q.shape[1] // k.shape[1]
        outs = []
        for b in range(cu_seqlens.shape[0] - 1):
            s, e = int(cu_seqlens[b]), int(cu_seqlens[b + 1])
            qs = q[s:e].transpose(0, 1)
            ks = k[s:e].transpose(0, 1).repeat_interleave(group, 0)
            vs = v[s:e].transpose(0, 1).repeat_interleave(group, 0)
            outs.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True).transpose(0, 1))
        return torch.cat(outs)


def get_inputs():
    dtype = getattr(torch, DTYPE)
    gen = torch.Generator().manual_seed(0)
    lens = torch.randint(max(1, MAX_LEN // 4), MAX_LEN + 1, (BATCH,), generator=gen)
    lens[0] = MAX_LEN
    lens[-1] = 1
    cu = torch.cat([torch.zeros(1, dtype=torch.int64), lens.cumsum(0)]).to(torch.int32)
    total = int(lens.sum())
    return [torch.randn(total, h, HEAD_DIM).to(dtype) for h in (HEADS_Q, HEADS_KV, HEADS_KV)] + [cu]


def get_init_inputs():
    return [MAX_LEN]
