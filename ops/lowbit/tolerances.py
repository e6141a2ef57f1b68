"""lowbit_linear's tolerances, {dtype: (atol, rtol)}, read via tilekit.tolerances.op_table("lowbit", NAME).

PROPERTY: the kernel against float64 x @ dequantize(qw).T. The products are exact-ish but a K-long fp32
sum of fp16-rounded inputs is not; the GEMM path also rounds the decoded weight to x's dtype before mma.
QUANT: quantize/dequantize against an independent float64 implementation of the table (bit-exact up to
the last fp16/fp32 conversion)."""
import torch

PROPERTY = {
    torch.float64: (1e-9, 1e-9),
    torch.float32: (2e-3, 2e-3),
    torch.float16: (5e-2, 2e-2),
    torch.bfloat16: (2e-1, 5e-2),
}

QUANT = {
    torch.float64: (0.0, 0.0),
    torch.float32: (0.0, 0.0),
}
