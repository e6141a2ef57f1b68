"""The op: ``tilekit::softmax(Tensor x) -> Tensor``: softmax over the last dim, written in the tilekit DSL.

Any rank >= 1 is flattened to rows of the last dim. fp16/bf16/fp32 compute in fp32 (float64, accepted for
gradient checks, in float64); the output has the input's dtype. A row may be any length: the forward
kernel is an online softmax over column blocks (running max and sum carried through a ``tk.range`` loop),
then a second pass writes the normalized values. Autograd goes through ``tilekit::softmax_backward``,
a second DSL kernel computing ``y * (g - sum(g * y, -1))``.
"""
import torch

import tilekit as tk

from ...backends import default_backend
from ..dispatch import (backend_for, check_same, check_tensor, checked_config, clamp_pow2, elem_bytes,
                        memoized_config, provided_config)
from .kernels import MAX_VALUES_PER_THREAD, SOFTMAX_TUNABLES, softmax_backward_kernel, softmax_kernel

OP_NAME = "softmax"
# the tuning protocol's id of each kernel
KERNEL_IDS = {"softmax_kernel": "softmax.forward", "softmax_backward_kernel": "softmax.backward"}

def _compute_dtype(dtype):
    return tk.float64 if dtype == torch.float64 else tk.float32


@memoized_config
def _default_config(shape, dtype, device):
    rows, n = shape
    if device.type == "cpu":
        # Reference executor and Triton interpreter pay per program and per loop iteration: wide
        # blocks and many rows per program, as far as the register rule allows at 16 warps.
        bn = clamp_pow2(n, 16, 2048)
        bm = clamp_pow2(rows, 1, min(64, 32 * 16 * MAX_VALUES_PER_THREAD // bn))
        config = {"BM": bm, "BN": bn, "num_warps": 16}
    else:
        # One row per program, the whole row in one block up to 4096 columns.
        bn = clamp_pow2(n, 16, 4096)
        config = {"BM": 1, "BN": bn, "num_warps": 8 if bn >= 2048 else 4 if bn >= 512 else 2}
    return checked_config(OP_NAME, config, SOFTMAX_TUNABLES, elem_bytes(dtype))


def _config_for(shape, dtype, device, backend=None, kernel_id="softmax.forward"):
    """The config for ``shape`` = (rows, row length): the config provider's (the autotuner's table) if it has
    a valid one for ``kernel_id``, else the default."""
    backend = backend or default_backend(device)
    return (provided_config(kernel_id, shape, dtype, device, backend, SOFTMAX_TUNABLES, elem_bytes(dtype))
            or _default_config(shape, dtype, device))


def launch_args(inputs, out, config):
    """(grid, args, kwargs) of a row-wise kernel over 2-D ``inputs`` and ``out``: the op and the tuner both
    launch through this."""
    grid = (tk.cdiv(out.shape[0], config["BM"]),)
    kwargs = dict(BM=config["BM"], BN=config["BN"], ACC=_compute_dtype(out.dtype), num_warps=config["num_warps"])
    return grid, (*inputs, out), kwargs


def _launch_rowwise(kernel, inputs, out):
    """Run a row-wise ``kernel(*inputs_as_rows, out_as_rows)`` over the last dim of ``out``."""
    n = out.shape[-1]
    if out.numel() == 0:
        return out
    rows_in = [t.reshape(-1, n) for t in inputs]  # a view whenever the layout allows one
    rows_out = out.view(-1, n)
    rows = rows_out.shape[0]
    backend = backend_for(out.device)
    config = _config_for((rows, n), out.dtype, out.device, backend, KERNEL_IDS[kernel.__name__])
    grid, args, kwargs = launch_args(rows_in, rows_out, config)
    kernel[grid](*args, backend=backend, **kwargs)
    return out


def _check_softmax_input(x):
    check_tensor(OP_NAME, "x", x)
    if x.dim() == 0:
        raise ValueError("tilekit::softmax: 'x' must have at least 1 dimension (softmax is over the last), "
                         "got a 0-D tensor")


@torch.library.custom_op("tilekit::softmax", mutates_args=())
def softmax(x: torch.Tensor) -> torch.Tensor:
    _check_softmax_input(x)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    return _launch_rowwise(softmax_kernel, [x], out)


@softmax.register_fake
def _softmax_fake(x):
    _check_softmax_input(x)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _check_backward_inputs(grad, y):
    for name, t in (("grad", grad), ("y", y)):
        check_tensor("softmax_backward", name, t)
    check_same("softmax_backward", {"grad": grad, "y": y})
    if grad.shape != y.shape:
        raise ValueError(f"tilekit::softmax_backward: grad is {tuple(grad.shape)} but y is {tuple(y.shape)}; "
                         f"they must match")
    if y.dim() == 0:
        raise ValueError("tilekit::softmax_backward: inputs must have at least 1 dimension")


@torch.library.custom_op("tilekit::softmax_backward", mutates_args=())
def softmax_backward(grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d softmax: given the softmax output ``y`` and the upstream gradient ``grad``, the input gradient."""
    _check_backward_inputs(grad, y)
    out = torch.empty(y.shape, dtype=y.dtype, device=y.device)
    return _launch_rowwise(softmax_backward_kernel, [grad, y], out)


@softmax_backward.register_fake
def _softmax_backward_fake(grad, y):
    _check_backward_inputs(grad, y)
    return torch.empty_like(y, memory_format=torch.contiguous_format)


def _softmax_setup_context(ctx, inputs, output):
    ctx.save_for_backward(output)


def _softmax_backward(ctx, grad):
    (y,) = ctx.saved_tensors
    return torch.ops.tilekit.softmax_backward(grad, y)


softmax.register_autograd(_softmax_backward, setup_context=_softmax_setup_context)


def softmax_reference(x: torch.Tensor) -> torch.Tensor:
    """The PyTorch oracle for ``tilekit::softmax``: computed in fp32 (float64 for float64), cast back."""
    wide = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.softmax(x.to(wide), dim=-1).to(x.dtype)


def softmax_backward_reference(grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The PyTorch oracle for ``tilekit::softmax_backward``."""
    wide = torch.float64 if y.dtype == torch.float64 else torch.float32
    g, yw = grad.to(wide), y.to(wide)
    return (yw * (g - (g * yw).sum(-1, keepdim=True))).to(y.dtype)


def kernel_example(shape=(4096, 4096), dtype=torch.float16, device=torch.device("cuda"), target=None):
    """(kernel, example args, launch kwargs) for a (rows, n) softmax: what `tilekit show/compile` use.
    Tensors are on the meta device; ``device`` only picks the config family (``target`` is ignored: one
    default for every GPU)."""
    rows, n = shape
    x = torch.empty(rows, n, dtype=dtype, device="meta")
    y = torch.empty(rows, n, dtype=dtype, device="meta")
    device = torch.device(device)
    config = _config_for((rows, n), dtype, device, "reference" if device.type == "cpu" else "triton")
    _, args, kwargs = launch_args((x,), y, config)
    return softmax_kernel, args, kwargs
