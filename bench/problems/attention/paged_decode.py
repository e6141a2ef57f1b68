"""Paged-KV decode (vLLM layout): one new query per sequence against a cache of fixed-size blocks.

Inputs: q (BATCH, HEADS_Q, D); k_cache, v_cache (NUM_BLOCKS, BLOCK_SIZE, HEADS_KV, D) in DTYPE; a shuffled
block_table (BATCH, MAX_BLOCKS) int32 and seq_lens (BATCH,) int32 with ragged lengths (last block partly
full). The reference gathers each sequence's blocks and calls scaled_dot_product_attention per sequence.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH, HEADS_Q, HEADS_KV, HEAD_DIM, BLOCK_SIZE, MAX_LEN = 16, 32, 8, 128, 16, 4096
DTYPE = "bfloat16"
QUICK = {"BATCH": 3, "HEADS_Q": 4, "HEADS_KV": 2, "HEAD_DIM": 64, "MAX_LEN": 100}
VARIANTS = {"llama3_8b_decode_bf16": {}}


class Model(nn.Module):
    def forward(self, q, k_cache, v_cache, block_table, seq_lens):
        group = q.shape[1] // k_cache.shape[2]
        outs = []
        for b in range(q.shape[0]):
            n = int(seq_lens[b])
            pages = block_table[b, :-(-n // k_cache.shape[1])].long()
            k = k_cache[pages].flatten(0, 1)[:n].transpose(0, 1).repeat_interleave(group, 0)
            v = v_cache[pages].flatten(0, 1)[:n].transpose(0, 1).repeat_interleave(group, 0)
            outs.append(F.scaled_dot_product_attention(q[b][:, None], k, v)[:, 0])
        return torch.stack(outs)


def get_inputs():
    dtype = getattr(torch, DTYPE)
    gen = torch.Generator().manual_seed(0)
    lens = torch.randint(MAX_LEN // 2, MAX_LEN + 1, (BATCH,), generator=gen)
    pages = (lens + BLOCK_SIZE - 1) // BLOCK_SIZE
    nb = int(pages.sum())
    table = torch.full((BATCH, int(pages.max())), -1, dtype=torch.int32)
    order, used = torch.randperm(nb, generator=gen).to(torch.int32), 0
    for b in range(BATCH):
        table[b, :pages[b]] = order[used:used + pages[b]]
        used += int(pages[b])
    k = torch.randn(nb, BLOCK_SIZE, HEADS_KV, HEAD_DIM).to(dtype)
    v = torch.randn(nb, BLOCK_SIZE, HEADS_KV, HEAD_DIM).to(dtype)
    return [torch.randn(BATCH, HEADS_Q, HEAD_DIM).to(dtype), k, v, table, lens.to(torch.int32)]


def get_init_inputs():
    return []
