"""tilekit candidate for bench/examples/kernelbench_style: softmax over the last dim via torch.ops.tilekit.softmax."""
import torch
import torch.nn as nn

import tilekit.ops  # noqa: F401  (registers torch.ops.tilekit.*)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.tilekit.softmax(x)
