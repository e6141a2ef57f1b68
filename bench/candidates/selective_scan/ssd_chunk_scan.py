"""tilekit candidate for problems/selective_scan/ssd_chunk_scan.py: Mamba-2 SSD via torch.ops.tilekit.ssd_scan
with the problem's chunk size (dt_softplus, dt_bias, D per head)."""
import torch
import torch.nn as nn

import tilekit.ops  # noqa: F401  (registers torch.ops.tilekit.*)


class ModelNew(nn.Module):
    def __init__(self, chunk: int = 256):
        super().__init__()
        self.chunk = chunk

    def forward(self, x, dt, A, B, C, D, dt_bias):
        y, _ = torch.ops.tilekit.ssd_scan(x, dt, A, B, C, self.chunk, D, None, dt_bias, None, None, True, 0.0, 3.0e38)
        return y
