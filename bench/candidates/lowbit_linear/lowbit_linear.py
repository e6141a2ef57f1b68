"""tilekit candidate for problems/lowbit_linear/lowbit_linear.py: the same packed codes (the problem's layout is
tilekit's) read as uintB with a constant zero point 2^(BITS-1), through tilekit.ops.lowbit_linear."""
import math

import torch
import torch.nn as nn

import tilekit as tk
import tilekit.ops
from tilekit import dtypes as D


class ModelNew(nn.Module):
    def __init__(self, in_features: int, out_features: int, bits: int, group: int, dtype: str):
        super().__init__()
        dt = getattr(torch, dtype)
        self.bits, self.group, self.shape = bits, group, (out_features, in_features)
        codes = torch.randint(0, 2**bits, (out_features, in_features))        # same draws, same order
        scales = (0.5 + torch.rand(out_features, in_features // group)) / (2 ** (bits - 1) * math.sqrt(in_features))
        self.register_buffer("qweight", tk.pack(codes, D.uint8 if bits == 8 else D.by_name(f"uint{bits}")).words)
        self.register_buffer("scales", scales.to(dt))
        self.register_buffer("zeros", torch.full((out_features, in_features // group), 2 ** (bits - 1),
                                                 dtype=torch.uint8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _ = self.shape
        return torch.ops.tilekit.lowbit_linear(x, self.qweight, self.scales, self.zeros, None, None, None,
                                               f"uint{self.bits}", self.group, n)
