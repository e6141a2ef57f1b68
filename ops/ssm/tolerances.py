"""Tolerances of the SSM family, {dtype: (atol, rtol)}, read through ``tilekit.tolerances.op_table("ssm", NAME)``.

A scan compounds one rounding per step into the state, and fp16/bf16 inputs are rounded before the scan, so
the bounds are looser than tilekit's PROPERTY table for outputs summed over N states and L steps.
"""
import torch

# forward outputs (out, last_state) against the float64 sequential recurrence fed the same rounded inputs
FORWARD = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-4, 2e-4),
    torch.float16: (3e-2, 2e-2),
    torch.bfloat16: (2e-1, 5e-2),
}

# gradients: each sums over L steps (dA, dD, d(delta_bias) also over the batch) and the adjoint is a second scan
BACKWARD = {
    torch.float64: (1e-9, 1e-9),
    torch.float32: (2e-3, 2e-3),
    torch.float16: (1e-1, 5e-2),
    torch.bfloat16: (5e-1, 1e-1),
}
