"""C = A @ B for 2-D A (M, K) and B (K, N), in the inputs' dtype.

Sizes: the module globals below are the full (GPU) shape. ``tilekit bench`` overrides them from
``QUICK`` for CPU runs and from ``VARIANTS`` for each benchmarked shape (see docs/bench.md);
get_inputs reads them when called. Without tilekit the file is a plain KernelBench problem.
"""
import torch
import torch.nn as nn

M, K, N = 4096, 4096, 4096
DTYPE = "float16"

QUICK = {"M": 192, "K": 160, "N": 224}

VARIANTS = {
    # Llama-7B-sized projections over a 4096-token prefill.
    "square_fp16": {},
    "mlp_up_bf16": {"K": 4096, "N": 11008, "DTYPE": "bfloat16", "quick": {"N": 288}},
    "mlp_down_fp16": {"K": 11008, "N": 4096, "quick": {"K": 288}},
    # Decode: a handful of tokens against a large weight.
    "decode_fp16": {"M": 16, "K": 4096, "N": 4096, "quick": {"M": 5}},
    # KernelBench's own dtype, with ragged (non-tile-multiple) sizes.
    "ragged_fp32": {"M": 4093, "K": 2047, "N": 3001, "DTYPE": "float32", "quick": {"M": 131, "K": 97, "N": 203}},
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)


def get_inputs():
    dtype = getattr(torch, DTYPE)
    # Scaled so outputs stay O(1) whatever K is: fp16 keeps its relative precision.
    a = torch.randn(M, K, dtype=torch.float32).to(dtype)
    b = (torch.randn(K, N, dtype=torch.float32) / K ** 0.5).to(dtype)
    return [a, b]


def get_init_inputs():
    return []
