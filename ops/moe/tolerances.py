"""moe's tolerance tables ({dtype: (atol, rtol)}), read through tilekit.tolerances.op_table("moe", NAME)."""
import torch

# moe_route's weights are fp32 whatever the logits' dtype; the oracle is float64 from the same logits.
ROUTE = {
    torch.float64: (1e-6, 1e-6),
    torch.float32: (1e-6, 1e-5),
    torch.float16: (1e-6, 1e-5),
    torch.bfloat16: (1e-6, 1e-5),
}

# d(logits) of moe_route: a few fp32 roundings (a softmax and its Jacobian).
ROUTE_BACKWARD = {
    torch.float64: (1e-6, 1e-5),
    torch.float32: (1e-6, 1e-5),
    torch.float16: (2e-3, 1e-2),
    torch.bfloat16: (1e-2, 4e-2),
}

# fused_moe: two GEMMs over H and F, the intermediate rounded to x's dtype once, an fp32 combine.
FUSED = {
    torch.float64: (1e-8, 1e-8),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (1e-2, 2e-2),
    torch.bfloat16: (6e-2, 6e-2),
}
