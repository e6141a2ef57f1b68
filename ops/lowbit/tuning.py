"""lowbit_linear's tuning declarations: ``lowbit_linear.gemv`` (M <= 16) and ``lowbit_linear.gemm``, shape tuple
``M,N,K`` with flags ``fmt`` and ``group``.

The protocol hands ``make_inputs`` / ``launch_args`` / ``default_config`` the sizes only, not the flags, so the
weights tuned on are int4, group 128, symmetric (the flags still key the table entries). The tuner launches
the kernel alone into a NaN-filled output, so GEMV trials with SPLIT_K > 1 (which accumulate with atomics into
a zeroed fp32 buffer, then run the finish kernel) fail its correctness gate and are never picked."""
import torch

from ...autotune.protocol import TuneKernel, register
from ...tolerances import op_table
from ...quant import QuantizedWeight, quantize
from . import op
from .kernels import lowbit_gemm_kernel, lowbit_gemv_kernel

TUNED_FMT, TUNED_GROUP = "int4", 128
FLAGS = ("fmt", "group")
# Llama-3-8B projections (q/o: 4096x4096, up/gate: 14336x4096, down: 4096x14336) at decode and prefill M
LLAMA = [(4096, 4096), (14336, 4096), (4096, 14336)]
GEMV_SHAPES = {"gpu": [(m, n, k) for m in (1, 16) for n, k in LLAMA], "cpu": [(1, 1024, 1024), (16, 1024, 1024)]}
GEMM_SHAPES = {"gpu": [(512, n, k) for n, k in LLAMA], "cpu": [(64, 512, 512), (256, 512, 512)]}


def make_inputs(shape, dtype, generator):
    m, n, k = shape
    w = torch.randn(n, k, generator=generator)
    qw = quantize(w, TUNED_FMT, group_size=TUNED_GROUP)
    return torch.randn(m, k, generator=generator).to(dtype), qw.qweight.words, qw.scales


def make_output(inputs):
    x, qweight, _ = inputs
    return torch.empty(x.shape[0], qweight.shape[0], dtype=x.dtype)


def _tensors(inputs, n):
    x, qweight, scales = inputs
    return op.operands(x, qweight, scales, None, None, None, None, TUNED_FMT, TUNED_GROUP, n)


def gemv_launch_args(inputs, out, config):
    tensors, flags = _tensors(inputs, out.shape[1])
    return op.gemv_launch(tensors, flags, out, config)


def gemm_launch_args(inputs, out, config):
    tensors, flags = _tensors(inputs, out.shape[1])
    return op.gemm_launch(tensors, flags, out, config)


def reference(x, qweight, scales):
    from ...packing import PackedTensor
    from ... import dtypes as D
    n, k = qweight.shape[0], x.shape[1]
    qw = QuantizedWeight(PackedTensor(qweight.cpu(), D.int4, (n, k)), scales.cpu(), None, None, None, TUNED_FMT,
                         TUNED_GROUP, (n, k))
    return op.lowbit_linear_reference(x.cpu(), qw).to(x.dtype).to(x.device)


def _gemv_default(shape, dtype, device):
    return {**op.gemv_default_config(shape, dtype, device, TUNED_GROUP), "SPLIT_K": 1}


def _gemm_default(shape, dtype, device):
    return op.gemm_default_config(shape, dtype, device, TUNED_GROUP)


GEMV = register(TuneKernel(
    id=op.GEMV_ID, kernel=lowbit_gemv_kernel, shape_names=("M", "N", "K"), make_inputs=make_inputs,
    make_output=make_output, launch_args=gemv_launch_args, reference=reference, default_config=_gemv_default,
    default_shapes=GEMV_SHAPES, flags=FLAGS, tolerances=op_table("lowbit"),
))

GEMM = register(TuneKernel(
    id=op.GEMM_ID, kernel=lowbit_gemm_kernel, shape_names=("M", "N", "K"), make_inputs=make_inputs,
    make_output=make_output, launch_args=gemm_launch_args, reference=reference, default_config=_gemm_default,
    default_shapes=GEMM_SHAPES, flags=FLAGS, tolerances=op_table("lowbit"),
))
