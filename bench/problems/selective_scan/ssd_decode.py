"""Mamba-2 decode step (mamba_ssm ``selective_state_update`` in head form): one new token per sequence
advances each sequence's SSM state.

Inputs (B=BATCH, H=HEADS, P=HEADDIM, G=GROUPS, N=DSTATE):
  state (B, H, P, N) fp32; x (B, H, P), dt (B, H), B (B, G, N), C (B, G, N) in DTYPE
  A (H,) fp32 (negative), D (H,) fp32, dt_bias (H,) fp32
Computation, in fp32 (head h reads group h // (H / G)):
  dt = softplus(dt + dt_bias)
  s' = exp(dt A) s + dt x B^T
  y  = s' C + D x, cast to DTYPE
Returns (y (B, H, P), s' (B, H, P, N) fp32). The inputs are not modified (a candidate whose kernel updates the
state in place works on a copy). Sizes: docs/bench.md convention.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH, HEADS, HEADDIM, GROUPS, DSTATE = 64, 80, 64, 1, 128
DTYPE = "bfloat16"

QUICK = {"BATCH": 3, "HEADS": 4, "HEADDIM": 16, "GROUPS": 1, "DSTATE": 16}

VARIANTS = {
    # Mamba-2-2.7B serving 64 sequences.
    "mamba2_2_7b_batch64_bf16": {},
    # One sequence (latency-bound), fp16, two groups.
    "mamba2_batch1_fp16": {"BATCH": 1, "GROUPS": 2, "DTYPE": "float16", "quick": {"BATCH": 1, "GROUPS": 2}},
}


class Model(nn.Module):
    def forward(self, state, x, dt, A, B, C, D, dt_bias):
        per_group = x.shape[1] // B.shape[1]
        dt = F.softplus(dt.float() + dt_bias.float())[..., None, None]           # (b, h, 1, 1)
        Bh = B.float().repeat_interleave(per_group, dim=1)[:, :, None, :]       # (b, h, 1, n)
        Ch = C.float().repeat_interleave(per_group, dim=1)[:, :, None, :]
        new = torch.exp(dt * A.float()[:, None, None]) * state + dt * x.float()[..., None] * Bh
        y = (new * Ch).sum(-1) + D.float()[:, None] * x.float()
        return y.to(x.dtype), new


def get_inputs():
    dtype = getattr(torch, DTYPE)
    state = torch.randn(BATCH, HEADS, HEADDIM, DSTATE)
    x = torch.randn(BATCH, HEADS, HEADDIM)
    dt = 0.5 * torch.randn(BATCH, HEADS)
    A = -torch.empty(HEADS).uniform_(1, 16)
    B = torch.randn(BATCH, GROUPS, DSTATE)
    C = torch.randn(BATCH, GROUPS, DSTATE)
    D = torch.randn(HEADS)
    dt_bias = torch.empty(HEADS).uniform_(-4.0, -2.0)
    return [state, x.to(dtype), dt.to(dtype), A, B.to(dtype), C.to(dtype), D, dt_bias]


def get_init_inputs():
    return []
