"""lowbit_linear's tuning declarations: ``lowbit_linear.gemv`` (M <= 16) and ``lowbit_linear.gemm``, shape tuple
``M,N,K`` with flags ``fmt`` and ``group``.

A job's ``fmt`` and ``group`` (default int4, 128) reach its inputs, launch and reference: the weights tuned on
are that format and group, symmetric. The op looks its config up with the call's format and group.

A GEMV trial runs as the op runs it: with SPLIT_K > 1 the kernel accumulates with atomics into an fp32 buffer (the
last of the GEMV's inputs) that ``before_launch`` zeroes, and ``after_launch`` runs the finish kernel into the
output. The tuner times GEMV trials by the wall clock, hooks included, so split-K pays for its two extra steps."""
import torch

from ...autotune.protocol import TuneKernel, register
from ...tolerances import op_table
from ...packing import PackedTensor
from ...quant import BLOCK_FORMATS, FORMATS, quantize
from . import op
from .kernels import lowbit_finish_kernel, lowbit_gemm_kernel, lowbit_gemv_kernel

FLAGS = ("fmt", "group")
FLAG_DEFAULTS = {"fmt": "int4", "group": "128"}
# Llama-3-8B projections (q/o: 4096x4096, up/gate: 14336x4096, down: 4096x14336) at decode and prefill M
LLAMA = [(4096, 4096), (14336, 4096), (4096, 14336)]
GEMV_SHAPES = {"gpu": [(m, n, k) for m in (1, 16) for n, k in LLAMA], "cpu": [(1, 1024, 1024), (16, 1024, 1024)]}
GEMM_SHAPES = {"gpu": [(512, n, k) for n, k in LLAMA], "cpu": [(64, 512, 512), (256, 512, 512)]}


def _format(flags):
    fmt = flags.get("fmt", FLAG_DEFAULTS["fmt"])
    try:
        group = int(flags.get("group", FLAG_DEFAULTS["group"]))
    except ValueError:
        raise ValueError(f"lowbit_linear: flag group={flags['group']!r} must be an integer (-1: per row)") from None
    return fmt, group


def _quantized(shape, flags, generator):
    m, n, k = shape
    fmt, group = _format(flags)
    return quantize(torch.randn(n, k, generator=generator), fmt, group_size=group)


def make_inputs(shape, dtype, generator, *, flags):
    """x, the packed codes, the scales (and the global scale, empty unless nvfp4), and the float64
    dequantized weight: the reference's oracle, computed by tilekit.quant independently of the kernels."""
    qw = _quantized(shape, flags, generator)
    x = torch.randn(shape[0], shape[2], generator=generator).to(dtype)
    scales = qw.scales.words if isinstance(qw.scales, PackedTensor) else qw.scales
    global_scale = qw.global_scale if qw.global_scale is not None else torch.empty(0)
    return x, qw.qweight.words, scales, global_scale, qw.dequantize(torch.float64)


def make_gemv_inputs(shape, dtype, generator, *, flags):
    """make_inputs plus the split-K accumulator: fp32 (M, N)."""
    return (*make_inputs(shape, dtype, generator, flags=flags), torch.empty(shape[0], shape[1], dtype=torch.float32))


def make_output(inputs):
    x, qweight = inputs[:2]
    return torch.empty(x.shape[0], qweight.shape[0], dtype=x.dtype)


def _tensors(inputs, n, flags):
    x, qweight, scales, global_scale = inputs[:4]
    fmt, group = _format(flags)
    group = BLOCK_FORMATS.get(fmt, group)
    return op.operands(x, qweight, scales, None, global_scale if global_scale.numel() else None, None, None,
                       fmt, group, n)


def gemv_launch_args(inputs, out, config, *, flags):
    """Into ``out`` with SPLIT_K = 1, else into the fp32 accumulator (the hooks zero it and finish)."""
    tensors, constexprs = _tensors(inputs, out.shape[1], flags)
    return op.gemv_launch(tensors, constexprs, out if config["SPLIT_K"] == 1 else inputs[-1], config)


def gemv_before_launch(inputs, out, config, backend, *, flags):
    if config["SPLIT_K"] > 1:
        inputs[-1].zero_()


def gemv_after_launch(inputs, out, config, backend, *, flags):
    if config["SPLIT_K"] > 1:
        grid, args, kwargs = op.finish_launch(inputs[-1], None, out, config)
        lowbit_finish_kernel[grid](*args, backend=backend, **kwargs)


def gemm_launch_args(inputs, out, config, *, flags):
    tensors, constexprs = _tensors(inputs, out.shape[1], flags)
    return op.gemm_launch(tensors, constexprs, out, config)


def reference(x, qweight, scales, global_scale, dequantized, *accumulator, flags):
    return (x.double() @ dequantized.double().T).to(x.dtype)


def normalize_flags(flags):
    """A block format's group is its fixed block, whatever the job says (as ``quantize`` does)."""
    fmt, group = _format(flags)
    if fmt not in FORMATS:
        raise ValueError(f"lowbit_linear: unknown flag fmt={fmt!r}; choose one of {', '.join(FORMATS)}")
    return {**flags, "group": BLOCK_FORMATS.get(fmt, group)}


def _group(flags):
    """The kernels' GROUP constexpr for the job's group."""
    fmt, group = _format(flags)
    return op.kernel_group(BLOCK_FORMATS.get(fmt, group))


def _gemv_default(shape, dtype, device, *, flags):
    fmt, _ = _format(flags)
    return op.gemv_default_config(shape, dtype, device, _group(flags), fmt=fmt, arch=op.device_arch(device))


def _gemm_default(shape, dtype, device, *, flags):
    fmt, _ = _format(flags)
    return op.gemm_default_config(shape, dtype, device, _group(flags), fmt=fmt, arch=op.device_arch(device))


def gemv_shape_rule(shape, config, *, flags):
    """A GEMV program covers all M rows at once (the op uses an entry only where BM >= M)."""
    if config["BM"] < shape[0]:
        return f"BM = {config['BM']} < M = {shape[0]}: a GEMV program covers every row"
    return None


GEMV = register(TuneKernel(
    id=op.GEMV_ID, kernel=lowbit_gemv_kernel, shape_names=("M", "N", "K"), make_inputs=make_gemv_inputs,
    make_output=make_output, launch_args=gemv_launch_args, reference=reference, default_config=_gemv_default,
    before_launch=gemv_before_launch, after_launch=gemv_after_launch, shape_rule=gemv_shape_rule,
    default_shapes=GEMV_SHAPES, flags=FLAGS, flag_defaults=FLAG_DEFAULTS, normalize_flags=normalize_flags,
    tolerances=op_table("lowbit"),
))

GEMM = register(TuneKernel(
    id=op.GEMM_ID, kernel=lowbit_gemm_kernel, shape_names=("M", "N", "K"), make_inputs=make_inputs,
    make_output=make_output, launch_args=gemm_launch_args, reference=reference, default_config=_gemm_default,
    default_shapes=GEMM_SHAPES, flags=FLAGS, flag_defaults=FLAG_DEFAULTS, normalize_flags=normalize_flags, tolerances=op_table("lowbit"),
))
