"""A mixture-of-experts FFN layer: router, top-k, expert SwiGLU FFNs, weighted combine.

For tokens x (TOKENS, HIDDEN) in DTYPE:
  logits = x W_r^T + bias              router in fp32; W_r (EXPERTS, HIDDEN); bias is fixed (below)
  p      = softmax(logits)             over experts
  (w, e) = top-k(p)                    TOP_K experts per token
  w      = w / sum(w)                  renormalised over the chosen k
  y      = sum_k w_k * FFN_{e_k}(x)    FFN_e(x) = W_down[e] (silu(W_gate[e] x) * (W_up[e] x))
W_gate/W_up (EXPERTS, FFN, HIDDEN), W_down (EXPERTS, HIDDEN, FFN), all DTYPE. Precision: every GEMM
accumulates in fp32 and returns fp32; the SwiGLU intermediate silu(g) * u is rounded to DTYPE once (what
a fused kernel stores); the expert outputs are weighted and combined in fp32, and only the output
(TOKENS, HIDDEN) is cast to DTYPE. (Rounding g, u, silu(g), the product and each expert's output to
DTYPE, as plain bf16 eager ops do, puts up to ~6 bf16 ulps of error on outputs where the experts'
contributions cancel: more than the 1e-2 tolerance, against candidates closer to the exact result.)

Routing: SKEW = 0 is balanced (random router, random tokens). SKEW > 0 adds the fixed router bias
-SKEW * log(1 + e) to expert e, a Zipf-like skew that sends most tokens to the first experts:
the load-imbalanced case grouped-GEMM kernels must handle. Sizes: docs/bench.md convention.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

TOKENS, HIDDEN, FFN = 4096, 4096, 14336
EXPERTS, TOP_K = 8, 2
SKEW = 0.0
DTYPE = "bfloat16"

QUICK = {"TOKENS": 37, "HIDDEN": 48, "FFN": 80}

VARIANTS = {
    # Mixtral-8x7B.
    "e8_top2_balanced": {},
    "e8_top2_skewed": {"SKEW": 2.0},
    # Switch-style top-1.
    "e16_top1_skewed": {"HIDDEN": 2048, "FFN": 5632, "EXPERTS": 16, "TOP_K": 1, "SKEW": 1.5},
    # OLMoE / Qwen-MoE-like fine-grained experts.
    "e64_top8_balanced": {"HIDDEN": 2048, "FFN": 1024, "EXPERTS": 64, "TOP_K": 8},
    "e64_top8_skewed_fp16": {"HIDDEN": 2048, "FFN": 1024, "EXPERTS": 64, "TOP_K": 8, "SKEW": 1.0,
                             "DTYPE": "float16"},
    # Extreme imbalance: a bias of -100 log(1 + e) sends every token to expert 0; the other seven get none.
    "e8_top1_all_to_one": {"TOP_K": 1, "SKEW": 100.0},
}


def mm_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b accumulated in fp32 and returned in fp32 (the product is not rounded to a's dtype). On a GPU,
    fp16/bf16 operands stay on the tensor cores through mm's out_dtype."""
    if a.dtype == torch.float32:
        return a @ b
    if a.is_cuda:
        try:
            return torch.mm(a, b, out_dtype=torch.float32)
        except (TypeError, RuntimeError, NotImplementedError):
            pass
    return a.float() @ b.float()


def router_bias(experts: int, skew: float) -> torch.Tensor:
    return -skew * torch.log1p(torch.arange(experts, dtype=torch.float32))


class Model(nn.Module):
    def __init__(self, hidden: int, ffn: int, experts: int, top_k: int, skew: float, dtype: str):
        super().__init__()
        dt = getattr(torch, dtype)
        self.top_k = top_k
        self.router = nn.Parameter((torch.randn(experts, hidden) / math.sqrt(hidden)).to(dt))
        self.w_gate = nn.Parameter((torch.randn(experts, ffn, hidden) / math.sqrt(hidden)).to(dt))
        self.w_up = nn.Parameter((torch.randn(experts, ffn, hidden) / math.sqrt(hidden)).to(dt))
        self.w_down = nn.Parameter((torch.randn(experts, hidden, ffn) / math.sqrt(ffn)).to(dt))
        self.register_buffer("bias", router_bias(experts, skew))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x.float() @ self.router.float().t() + self.bias
        probs = torch.softmax(logits, dim=-1)
        weights, experts = probs.topk(self.top_k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        for e in range(self.w_gate.shape[0]):
            tokens, slot = (experts == e).nonzero(as_tuple=True)
            if tokens.numel() == 0:
                continue
            xe = x[tokens]
            h = (F.silu(mm_fp32(xe, self.w_gate[e].t())) * mm_fp32(xe, self.w_up[e].t())).to(x.dtype)
            ye = mm_fp32(h, self.w_down[e].t())
            out.index_add_(0, tokens, ye * weights[tokens, slot, None])
        return out.to(x.dtype)


def get_inputs():
    return [torch.randn(TOKENS, HIDDEN).to(getattr(torch, DTYPE))]


def get_init_inputs():
    if not 1 <= TOP_K <= EXPERTS:
        raise ValueError(f"TOP_K={TOP_K} must be in [1, EXPERTS={EXPERTS}]")
    return [HIDDEN, FFN, EXPERTS, TOP_K, SKEW, DTYPE]
