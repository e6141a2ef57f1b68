"""matmul's tuning declaration (the protocol in ``tilekit.autotune.protocol``): shape tuple ``M,N,K``."""
import torch

from ...autotune.protocol import TuneKernel, register
from . import op
from .kernels import matmul_kernel


def make_inputs(shape, dtype, generator):
    m, n, k = shape
    return (torch.randn(m, k, generator=generator).to(dtype), torch.randn(k, n, generator=generator).to(dtype))


def make_output(inputs):
    a, b = inputs
    return torch.empty(a.shape[0], b.shape[1], dtype=a.dtype)


MAIN = register(TuneKernel(
    id="matmul.main",
    kernel=matmul_kernel,
    shape_names=("M", "N", "K"),
    make_inputs=make_inputs,
    make_output=make_output,
    launch_args=op.launch_args,
    reference=op.matmul_reference,
    default_config=op._default_config,
    # GPU: square LLM GEMMs, an MLP up-projection and a decode-sized M; CPU (PoCL): sizes that time in ms.
    default_shapes={"gpu": [(4096, 4096, 4096), (4096, 11008, 4096), (16, 4096, 4096)],
                    "cpu": [(256, 256, 256), (512, 512, 512)]},
))
