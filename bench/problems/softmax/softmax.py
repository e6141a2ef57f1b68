"""Y = softmax(X) over the last dimension of a 2-D X (rows, cols), in X's dtype.

Sizes follow the convention of docs/bench.md: module globals are the full shape, ``QUICK`` and
``VARIANTS`` override them; get_inputs reads them when called.
"""
import torch
import torch.nn as nn

ROWS, COLS = 4096, 32000
DTYPE = "float32"
SCALE = 3.0        # logits spread: larger values stress the max-subtraction

QUICK = {"ROWS": 67, "COLS": 1000}

VARIANTS = {
    # LM-head logits over a Llama-2 vocabulary.
    "vocab_logits_fp32": {},
    # Attention scores: (batch * heads * queries) rows of a 4096-long context.
    "attn_scores_fp16": {"ROWS": 32768, "COLS": 4096, "DTYPE": "float16", "quick": {"ROWS": 129, "COLS": 333}},
    # Many short rows (MoE router over 64 experts for 64k tokens).
    "router_fp32": {"ROWS": 65536, "COLS": 64, "quick": {"ROWS": 517, "COLS": 64}},
    # Large logits: exp overflows without the max subtraction.
    "large_logits_bf16": {"ROWS": 8192, "COLS": 8192, "DTYPE": "bfloat16", "SCALE": 60.0,
                          "quick": {"ROWS": 45, "COLS": 777}},
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=-1)


def get_inputs():
    x = torch.randn(ROWS, COLS, dtype=torch.float32) * SCALE
    return [x.to(getattr(torch, DTYPE))]


def get_init_inputs():
    return []
