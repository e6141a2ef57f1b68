"""Causal sliding-window attention (Mistral-style): query i sees keys i - WINDOW … i, MHA or GQA.

Inputs: q (B, HEADS_Q, SEQ, D), k and v (B, HEADS_KV, SEQ, D) in DTYPE. Output (B, HEADS_Q, SEQ, D).
The reference builds the banded boolean mask and calls PyTorch's scaled_dot_product_attention.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH, SEQ, HEADS_Q, HEADS_KV, HEAD_DIM, WINDOW = 1, 8192, 32, 8, 128, 4096
DTYPE = "bfloat16"

QUICK = {"BATCH": 1, "SEQ": 97, "HEADS_Q": 4, "HEADS_KV": 2, "HEAD_DIM": 64, "WINDOW": 20}
VARIANTS = {"gqa_window4096_d128_bf16": {}}


class Model(nn.Module):
    def __init__(self, window: int):
        super().__init__()
        self.window = window

    def forward(self, q, k, v):
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        i = torch.arange(q.shape[2], device=q.device)[:, None]
        j = torch.arange(k.shape[2], device=q.device)[None, :]
        mask = (j <= i) & (j >= i - self.window)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def get_inputs():
    dtype = getattr(torch, DTYPE)
    return [torch.randn(BATCH, h, SEQ, HEAD_DIM).to(dtype) for h in (HEADS_Q, HEADS_KV, HEADS_KV)]


def get_init_inputs():
    return [WINDOW]
