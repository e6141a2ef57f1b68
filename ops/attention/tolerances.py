"""attention's tolerances, {dtype: (atol, rtol)}, against the float64 reference. float64 is limited by the
kernels' runtime float scalars (scale, softcap), which are fp32. fp16/bf16 round P and
dS to the input dtype before each matrix multiply (as FA2 does), hence the wide low-precision entries."""
import torch

PROPERTY = {torch.float64: (1e-6, 1e-6), torch.float32: (2e-4, 2e-4), torch.float16: (1e-2, 1e-2),
            torch.bfloat16: (5e-2, 5e-2)}
# dq, dk, dv: sums over a whole sequence of rounded products
BACKWARD = {torch.float64: (1e-5, 1e-5), torch.float32: (1e-3, 1e-3), torch.float16: (3e-2, 3e-2),
            torch.bfloat16: (1.5e-1, 1e-1)}
