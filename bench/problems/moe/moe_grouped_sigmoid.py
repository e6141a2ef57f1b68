"""A DeepSeek-V3-style routed MoE layer: sigmoid scores, a selection-only bias, group-limited top-k.

For tokens x (TOKENS, HIDDEN) in DTYPE:
  logits = x W_r^T                      router in fp32; W_r (EXPERTS, HIDDEN)
  s      = sigmoid(logits)              the affinity of each expert
  sel    = s + b                        b (EXPERTS,) is a fixed correction bias, for selection only
  groups: the EXPERTS split into GROUPS groups in order; a group's score is the sum of its two largest
          sel; the TOPK_GROUPS best groups are kept, and the TOP_K experts by sel among them chosen
  w      = s at the chosen experts / their sum * ROUTE_SCALE
  y      = sum_k w_k * FFN_{e_k}(x)     FFN_e(x) = W_down[e] (silu(W_gate[e] x) * (W_up[e] x))
The routed experts only (DeepSeek's shared expert is a dense MLP beside this). Precision as in
moe_layer.py: fp32-accumulated GEMMs, the SwiGLU intermediate rounded to DTYPE once, an fp32 combine, the
output cast to DTYPE. Full size: DeepSeek-V3's routing (256 experts, top-8, 8 groups, 4 kept, scale 2.5)
at a narrower width than V3's 7168 x 2048, so that its weights take 3 GiB. Sizes: docs/bench.md convention.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

TOKENS, HIDDEN, FFN = 4096, 2048, 1024
EXPERTS, TOP_K, GROUPS, TOPK_GROUPS = 256, 8, 8, 4
ROUTE_SCALE = 2.5
DTYPE = "bfloat16"

QUICK = {"TOKENS": 37, "HIDDEN": 48, "FFN": 80}

VARIANTS = {
    "e256_top8_g8k4": {},
    "e64_top6_g8k3_fp16": {"EXPERTS": 64, "TOP_K": 6, "TOPK_GROUPS": 3, "ROUTE_SCALE": 1.0, "DTYPE": "float16"},
}


def mm_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b accumulated in fp32 and returned in fp32; on a GPU through mm's out_dtype (tensor cores)."""
    if a.dtype == torch.float32:
        return a @ b
    if a.is_cuda:
        try:
            return torch.mm(a, b, out_dtype=torch.float32)
        except (TypeError, RuntimeError, NotImplementedError):
            pass
    return a.float() @ b.float()


class Model(nn.Module):
    def __init__(self, hidden: int, ffn: int, experts: int, top_k: int, groups: int, topk_groups: int,
                 route_scale: float, dtype: str):
        super().__init__()
        dt = getattr(torch, dtype)
        self.top_k, self.groups, self.topk_groups, self.route_scale = top_k, groups, topk_groups, route_scale
        self.router = nn.Parameter((torch.randn(experts, hidden) / math.sqrt(hidden)).to(dt))
        self.w_gate = nn.Parameter((torch.randn(experts, ffn, hidden) / math.sqrt(hidden)).to(dt))
        self.w_up = nn.Parameter((torch.randn(experts, ffn, hidden) / math.sqrt(hidden)).to(dt))
        self.w_down = nn.Parameter((torch.randn(experts, hidden, ffn) / math.sqrt(ffn)).to(dt))
        self.register_buffer("bias", 0.1 * torch.randn(experts))  # drawn last: the candidate draws alike

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, experts = x.shape[0], self.router.shape[0]
        scores = torch.sigmoid(x.float() @ self.router.float().t())
        sel = scores + self.bias
        group_score = sel.view(tokens, self.groups, -1).topk(2, dim=-1).values.sum(-1)
        kept = group_score.topk(self.topk_groups, dim=-1).indices
        keep = torch.zeros(tokens, self.groups, dtype=torch.bool, device=x.device).scatter_(1, kept, True)
        sel = sel.masked_fill(~keep.repeat_interleave(experts // self.groups, dim=1), -float("inf"))
        chosen = sel.topk(self.top_k, dim=-1).indices
        weights = scores.gather(1, chosen)
        weights = weights / weights.sum(dim=-1, keepdim=True) * self.route_scale
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        for e in range(experts):
            rows, slot = (chosen == e).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            xe = x[rows]
            h = (F.silu(mm_fp32(xe, self.w_gate[e].t())) * mm_fp32(xe, self.w_up[e].t())).to(x.dtype)
            out.index_add_(0, rows, mm_fp32(h, self.w_down[e].t()) * weights[rows, slot, None])
        return out.to(x.dtype)


def get_inputs():
    return [torch.randn(TOKENS, HIDDEN).to(getattr(torch, DTYPE))]


def get_init_inputs():
    if EXPERTS % GROUPS or EXPERTS // GROUPS < 2:
        raise ValueError(f"GROUPS={GROUPS} must split EXPERTS={EXPERTS} into groups of at least 2")
    if not 1 <= TOP_K <= TOPK_GROUPS * (EXPERTS // GROUPS):
        raise ValueError(f"TOP_K={TOP_K} must be in [1, {TOPK_GROUPS * (EXPERTS // GROUPS)}]")
    return [HIDDEN, FFN, EXPERTS, TOP_K, GROUPS, TOPK_GROUPS, ROUTE_SCALE, DTYPE]
