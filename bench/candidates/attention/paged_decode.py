"""tilekit candidate for problems/attention/paged_decode.py: split-KV paged decode in the DSL."""
import torch
import torch.nn as nn

import tilekit.ops  # noqa: F401  (registers torch.ops.tilekit.*)


class ModelNew(nn.Module):
    def forward(self, q, k_cache, v_cache, block_table, seq_lens):
        o, _ = torch.ops.tilekit.attention_decode(q, k_cache, v_cache, block_table, seq_lens,
                                                  q.shape[-1] ** -0.5, -1, None, 0)
        return o
