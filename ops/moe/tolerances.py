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

# fused_moe's and moe_layer's gradients: the forward's roundings plus d[gate, up] and the recomputed h
# rounded to x's dtype once each, then a GEMM over 2F (dx) or over an expert's tokens (dW), fp32-accumulated.
# Measured worst over 40 random cases (H, F <= 40): about 0.5 of these bounds in bf16, 0.16 in fp16, 0.1 in fp32.
FUSED_BACKWARD = {
    torch.float64: (1e-8, 1e-8),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (5e-3, 5e-3),
    torch.bfloat16: (4e-2, 3e-2),
}
