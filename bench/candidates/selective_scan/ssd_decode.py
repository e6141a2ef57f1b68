"""tilekit candidate for problems/selective_scan/ssd_decode.py: torch.ops.tilekit.ssd_state_update. The op
advances the state in place (as a serving loop wants); the problem's inputs must stay unmodified, so this
candidate updates a copy, which adds one state read and write to what it is timed on."""
import torch
import torch.nn as nn

import tilekit.ops  # noqa: F401  (registers torch.ops.tilekit.*)


class ModelNew(nn.Module):
    def forward(self, state, x, dt, A, B, C, D, dt_bias):
        new = state.clone()
        y = torch.ops.tilekit.ssd_state_update(new, x, dt, A, B, C, D, None, dt_bias, True, None)
        return y, new
