"""tilekit candidate for problems/moe/moe_grouped_sigmoid.py: router logits through tilekit::matmul, then
tilekit::moe_route with sigmoid scoring, the selection-only bias and group-limited top-k, then
tilekit::fused_moe."""
import math

import torch
import torch.nn as nn

import tilekit.ops as tk_ops


class ModelNew(nn.Module):
    def __init__(self, hidden, ffn, experts, top_k, groups, topk_groups, route_scale, dtype):
        super().__init__()
        dt = getattr(torch, dtype)
        self.top_k, self.groups, self.topk_groups, self.route_scale = top_k, groups, topk_groups, route_scale
        self.router = nn.Parameter((torch.randn(experts, hidden) / math.sqrt(hidden)).to(dt))
        # drawn in the problem's order (same seed, same weights), stored once as fused_moe's (E, 2F, H)
        w_gate = (torch.randn(experts, ffn, hidden) / math.sqrt(hidden)).to(dt)
        w_up = (torch.randn(experts, ffn, hidden) / math.sqrt(hidden)).to(dt)
        self.w_gate_up = nn.Parameter(torch.cat([w_gate, w_up], dim=1))
        self.w_down = nn.Parameter((torch.randn(experts, hidden, ffn) / math.sqrt(ffn)).to(dt))
        self.register_buffer("bias", 0.1 * torch.randn(experts))

    def forward(self, x):
        logits = torch.ops.tilekit.matmul(x.float(), self.router.float().t())
        weights, ids = tk_ops.moe_route(logits, self.top_k, scoring="sigmoid", bias=self.bias,
                                        num_groups=self.groups, topk_groups=self.topk_groups,
                                        route_scale=self.route_scale)
        return tk_ops.fused_moe(x, self.w_gate_up, self.w_down, weights, ids)
