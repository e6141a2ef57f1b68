"""The op: ``tilekit::matmul(Tensor a, Tensor b) -> Tensor``: 2-D ``a @ b`` written in the tilekit DSL.

Output dtype = input dtype; fp16/bf16/fp32 accumulate in fp32 (float64, accepted for gradient checks,
accumulates in float64). Autograd: grad_a = g @ b.T and grad_b = a.T @ g, both through this same op.
"""
import torch

import tilekit as tk

from ...backends import default_backend
from ..dispatch import (backend_for, check_same, check_tensor, checked_config, clamp_pow2, elem_bytes,
                        memoized_config, provided_config)
from .kernels import MATMUL_TUNABLES, accumulator_dtype, matmul_kernel

OP_NAME = "matmul"
KERNEL_ID = "matmul.main"


@memoized_config
def _default_config(shape, dtype, device):
    m, n, k = shape
    if device.type == "cpu":
        # Reference executor and Triton interpreter pay per program and per loop iteration, so take
        # the biggest blocks the shape can use; one pipeline stage (there is no pipeline).
        config = {"BM": clamp_pow2(m, 16, 128), "BN": clamp_pow2(n, 16, 128), "BK": clamp_pow2(k, 16, 128),
                  "num_warps": 8, "num_stages": 1}
    else:
        bm, bn = clamp_pow2(m, 16, 128), clamp_pow2(n, 16, 128)
        config = {"BM": bm, "BN": bn, "BK": clamp_pow2(k, 16, 32),
                  "num_warps": 8 if bm * bn >= 128 * 128 else 4, "num_stages": 3}
    # Wide dtypes (float64) may overflow the shared-memory budget: give up stages, then depth.
    size = elem_bytes(dtype)
    while not MATMUL_TUNABLES.is_valid({**config, "elem_bytes": size}):
        if config["num_stages"] > 1:
            config["num_stages"] -= 1
        elif config["BK"] > 16:
            config["BK"] //= 2
        else:
            break
    return checked_config(OP_NAME, config, MATMUL_TUNABLES, size)


def _config_for(shape, dtype, device, backend=None):
    """The config for an (M, N, K) matmul: the config provider's (the autotuner's table) if it has a valid one,
    else the default."""
    backend = backend or default_backend(device)
    return (provided_config(KERNEL_ID, shape, dtype, device, backend, MATMUL_TUNABLES, elem_bytes(dtype))
            or _default_config(shape, dtype, device))


def launch_args(inputs, out, config):
    """(grid, args, kwargs) of ``matmul_kernel`` for ``out = a @ b`` under ``config``: the op and the tuner
    both launch through this."""
    a, b = inputs
    m, n = out.shape
    grid = (tk.cdiv(m, config["BM"]), tk.cdiv(n, config["BN"]))
    kwargs = dict(BM=config["BM"], BN=config["BN"], BK=config["BK"], ACC=accumulator_dtype(a.dtype),
                  num_warps=config["num_warps"], num_stages=config["num_stages"])
    return grid, (a, b, out), kwargs


def _check_inputs(a, b):
    check_tensor(OP_NAME, "a", a, ranks=(2,))
    check_tensor(OP_NAME, "b", b, ranks=(2,))
    check_same(OP_NAME, {"a": a, "b": b})
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"tilekit::matmul: shapes do not chain: a is {tuple(a.shape)}, b is {tuple(b.shape)} "
                         f"(a.shape[1] must equal b.shape[0])")


@torch.library.custom_op("tilekit::matmul", mutates_args=())
def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    _check_inputs(a, b)
    m, k = a.shape
    n = b.shape[1]
    c = torch.empty((m, n), dtype=a.dtype, device=a.device)
    if m == 0 or n == 0:
        return c
    backend = backend_for(a.device)
    config = _config_for((m, n, k), a.dtype, a.device, backend)
    # K == 0 runs no loop iteration and stores the zero accumulator, as a @ b does.
    grid, args, kwargs = launch_args((a, b), c, config)
    matmul_kernel[grid](*args, backend=backend, **kwargs)
    return c


@matmul.register_fake
def _matmul_fake(a, b):
    _check_inputs(a, b)
    return a.new_empty((a.shape[0], b.shape[1]))


def _matmul_setup_context(ctx, inputs, output):
    a, b = inputs
    ctx.save_for_backward(a, b)


def _matmul_backward(ctx, grad):
    a, b = ctx.saved_tensors
    grad_a = grad_b = None
    # .T views are strided, not copied: the kernel reads any strides.
    if ctx.needs_input_grad[0]:
        grad_a = torch.ops.tilekit.matmul(grad, b.T)
    if ctx.needs_input_grad[1]:
        grad_b = torch.ops.tilekit.matmul(a.T, grad)
    return grad_a, grad_b


matmul.register_autograd(_matmul_backward, setup_context=_matmul_setup_context)


def matmul_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The PyTorch oracle for ``tilekit::matmul``: same contract, fp32 (float64) accumulate."""
    wide = torch.float64 if a.dtype == torch.float64 else torch.float32
    return (a.to(wide) @ b.to(wide)).to(a.dtype)


def kernel_example(shape=(4096, 4096, 4096), dtype=torch.float16, device=torch.device("cuda"), target=None):
    """(kernel, example args, launch kwargs) for an (M, N, K) matmul: what `tilekit show/compile` use.
    Tensors are on the meta device; ``device`` only picks the config family (``target`` is ignored: one
    default for every GPU)."""
    m, n, k = shape
    a = torch.empty(m, k, dtype=dtype, device="meta")
    b = torch.empty(k, n, dtype=dtype, device="meta")
    c = torch.empty(m, n, dtype=dtype, device="meta")
    device = torch.device(device)
    config = _config_for((m, n, k), dtype, device, "reference" if device.type == "cpu" else "triton")
    _, args, kwargs = launch_args((a, b), c, config)
    return matmul_kernel, args, kwargs
