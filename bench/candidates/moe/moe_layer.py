"""tilekit candidate for problems/moe/moe_layer.py: the router logits through tilekit::matmul (with the
problem's logit bias added here, before routing), tilekit::moe_route, then tilekit::fused_moe (stable alignment, two grouped GEMMs
with a fused SwiGLU, a fixed-order combine)."""
import math

import torch
import torch.nn as nn

import tilekit.ops as tk_ops


class ModelNew(nn.Module):
    def __init__(self, hidden, ffn, experts, top_k, skew, dtype):
        super().__init__()
        dt = getattr(torch, dtype)
        self.top_k = top_k
        self.router = nn.Parameter((torch.randn(experts, hidden) / math.sqrt(hidden)).to(dt))
        # drawn in the problem's order (same seed, same weights), stored once as fused_moe's (E, 2F, H)
        w_gate = (torch.randn(experts, ffn, hidden) / math.sqrt(hidden)).to(dt)
        w_up = (torch.randn(experts, ffn, hidden) / math.sqrt(hidden)).to(dt)
        self.w_gate_up = nn.Parameter(torch.cat([w_gate, w_up], dim=1))
        self.w_down = nn.Parameter((torch.randn(experts, hidden, ffn) / math.sqrt(ffn)).to(dt))
        self.register_buffer("bias", -skew * torch.log1p(torch.arange(experts, dtype=torch.float32)))

    def forward(self, x):
        # the skew is a logit bias, so it goes into the logits, not moe_route's selection-only bias=
        logits = torch.ops.tilekit.matmul(x.float(), self.router.float().t()) + self.bias
        weights, ids = tk_ops.moe_route(logits, self.top_k)
        return tk_ops.fused_moe(x, self.w_gate_up, self.w_down, weights, ids)
