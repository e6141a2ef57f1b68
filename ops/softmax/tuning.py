"""softmax's tuning declarations (the protocol in ``tilekit.autotune.protocol``): shape tuple ``rows,cols``.
The forward and the backward kernel are tuned each on its own."""
import torch

from ...autotune.protocol import TuneKernel, register
from . import op
from .kernels import softmax_backward_kernel, softmax_kernel

# GPU: LLM-sized rows (a vocabulary, attention scores); CPU (PoCL): sizes that time in ms.
DEFAULT_SHAPES = {"gpu": [(4096, 4096), (1024, 32768), (16384, 1024)], "cpu": [(256, 1000), (1024, 512)]}


def make_forward_inputs(shape, dtype, generator):
    rows, cols = shape
    return ((3 * torch.randn(rows, cols, generator=generator)).to(dtype),)


def make_backward_inputs(shape, dtype, generator):
    rows, cols = shape
    y = torch.softmax(3 * torch.randn(rows, cols, generator=generator), dim=-1).to(dtype)
    return (torch.randn(rows, cols, generator=generator).to(dtype), y)


def make_output(inputs):
    return torch.empty_like(inputs[-1])


FORWARD = register(TuneKernel(
    id="softmax.forward", kernel=softmax_kernel, shape_names=("rows", "cols"),
    make_inputs=make_forward_inputs, make_output=make_output, launch_args=op.launch_args,
    reference=op.softmax_reference, default_config=op._default_config, default_shapes=DEFAULT_SHAPES,
))

BACKWARD = register(TuneKernel(
    id="softmax.backward", kernel=softmax_backward_kernel, shape_names=("rows", "cols"),
    make_inputs=make_backward_inputs, make_output=make_output, launch_args=op.launch_args,
    reference=op.softmax_backward_reference, default_config=op._default_config, default_shapes=DEFAULT_SHAPES,
))
