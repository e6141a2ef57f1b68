"""tilekit candidate for bench/examples/kernelbench_style: C = A @ B through torch.ops.tilekit.matmul."""
import torch
import torch.nn as nn

import tilekit.ops  # noqa: F401  (registers torch.ops.tilekit.*)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.ops.tilekit.matmul(A, B)
