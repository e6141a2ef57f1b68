"""tilekit candidate for problems/lowbit_linear/lowbit_formats.py: the problem's buffers are tilekit's layout
(fp4 / mxfp4 / nvfp4 as float4_e2m1 codes, nvfp4 block scales as packed float8_e4m3, int3_asym as uint3 with
zero points), run through tilekit.ops.lowbit_linear."""

import torch
import torch.nn as nn

import tilekit as tk
import tilekit.ops
from tilekit import dtypes as D

BITS = {"fp4_e2m1": 4, "mxfp4": 4, "nvfp4": 4, "int3_asym": 3}
BLOCK = {"mxfp4": 32, "nvfp4": 16}


def _make_weights(n, k, fmt, group):
    """The problem's own weight draws (same generator calls, same order)."""
    bits = BITS[fmt]
    g = BLOCK.get(fmt, group)
    codes = torch.randint(0, 2**bits, (n, k))
    out = {"qweight": tk.pack(codes, D.uint4 if bits == 4 else D.uint3).words}   # raw code bits
    if fmt in ("fp4_e2m1", "int3_asym"):
        out["scales"] = ((0.5 + torch.rand(n, k // g)) / (4 * k**0.5)).to(torch.float16)
    elif fmt == "mxfp4":
        out["scales"] = (127 - 2 - torch.randint(4, 7, (n, k // g))).to(torch.uint8)
    else:
        block = (0.5 + torch.rand(n, k // g)) * 64
        e4m3 = block.to(torch.float8_e4m3fn).view(torch.uint8).to(torch.int64)
        out["scales"] = tk.pack(e4m3, D.uint8).words
        out["global_scale"] = torch.tensor([1.0 / (256 * k**0.5)], dtype=torch.float32)
    if fmt == "int3_asym":
        out["zeros"] = torch.randint(2, 6, (n, k // g)).to(torch.uint8)
    return out


class ModelNew(nn.Module):
    def __init__(self, in_features: int, out_features: int, fmt: str, group: int):
        super().__init__()
        self.fmt, self.group, self.shape = fmt, BLOCK.get(fmt, group), (out_features, in_features)
        w = _make_weights(out_features, in_features, fmt, group)
        for name in ("qweight", "scales", "zeros", "global_scale"):
            self.register_buffer(name, w.get(name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmt = {"int3_asym": "uint3"}.get(self.fmt, self.fmt)
        return torch.ops.tilekit.lowbit_linear(x, self.qweight, self.scales, self.zeros, self.global_scale, None,
                                               None, fmt, self.group, self.shape[0])
