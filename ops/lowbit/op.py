"""The op: ``tilekit::lowbit_linear``: y = x[..., perm] @ dequantize(qw).T + bias, weights decoded in registers.

M <= 16 rows take the GEMV / split-K kernel, larger M the tiled GEMM (kernels.py). Autograd: x and bias
(the weights are frozen)."""
import functools

import torch

import tilekit as tk

from ...backends import default_backend
from ... import dtypes as D
from ...packing import PackedTensor
from ...quant import BLOCK_FORMATS, FLOAT_FORMATS, FORMATS, QuantizedWeight
from ..dispatch import backend_for, check_tensor, checked_config, clamp_pow2, elem_bytes, provided_config
from . import kernels as K_

OP_NAME = "lowbit_linear"
GEMV_ID = "lowbit_linear.gemv"
GEMM_ID = "lowbit_linear.gemm"
GEMV_MAX_M = 16
# GROUP for per-channel scales (group_size -1): any k // GROUP is 0 and every BK divides it.
PER_CHANNEL_GROUP = 1 << 30


def weight_dtype(fmt):
    """The packed element dtype of ``fmt``'s codes."""
    if fmt in FLOAT_FORMATS:
        return FLOAT_FORMATS[fmt]
    if fmt in BLOCK_FORMATS:
        return D.float4_e2m1
    if fmt == "int1":
        return D.uint1
    kind, bits = ("uint", int(fmt[4:])) if fmt.startswith("uint") else ("int", int(fmt[3:]))
    return D.by_name(f"{kind}{bits}") if bits < 8 else (D.int8 if kind == "int" else D.uint8)


def format_flags(fmt):
    """(WKIND, SKIND) constexprs of ``fmt``."""
    wkind = K_.W_SIGN if fmt == "int1" else K_.W_VALUE
    skind = {"mxfp4": K_.S_E8M0, "nvfp4": K_.S_E4M3}.get(fmt, K_.S_FP16)
    return wkind, skind


def kernel_group(group_size):
    return PER_CHANNEL_GROUP if group_size <= 0 else group_size


def _bk_for(group, k, lo=16, hi=128):
    """The widest power-of-two BK (<= hi, >= lo) dividing the group, so a tile needs one scale column."""
    bk = hi
    while bk > lo and group % bk:
        bk //= 2
    return max(lo, min(bk, clamp_pow2(k, lo, hi)))


def device_arch(device):
    """The GPU architecture of ``device`` as a compile target names it ("gfx942", "sm_90"), or None on the CPU."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return _cuda_arch(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _cuda_arch(index):
    props = torch.cuda.get_device_properties(index)
    if torch.version.hip:
        return props.gcnArchName.split(":")[0]
    return f"sm_{props.major}{props.minor}"


def _straddling_on_amd(arch, fmt):
    """Codes that cross word boundaries (3, 5, 6, 7 bits) on an AMD target: their decode at BK >= 64 runs out of
    SGPRs (the per-lane masks and gather selects are kept live there, ~175-215 spilled to VGPR lanes on gfx90a and
    gfx942); at BK = 32 (and BN = 32 on the GEMM) it compiles with none."""
    return bool(arch) and arch.startswith("gfx") and 32 % weight_dtype(fmt).bits != 0


def _side_bytes(fmt):
    """Bytes of scale plus zero point that one group of ``fmt`` stores."""
    return (1 if fmt in BLOCK_FORMATS else 2) + (1 if fmt.startswith("uint") else 0)


def _gemv_bn(fmt, bm, bk, group, threads, widths=(32, 64, 128)):
    """The narrowest GEMV BN whose K iteration issues at most 1.1x the ideal bytes (codes plus one scale and zero
    per row and group): every thread loads at least one scale and zero, so a tile of fewer rows than threads
    repeats them, which narrow codes (1-3 bits) cannot absorb at BN = 32 (bench/abstraction/lowbit.py). Zero
    points are counted for uintB only (``fmt`` does not say symmetric=False)."""
    if group % bk:
        return widths[0]      # scales gathered per column: no BN helps
    bits, side, best = weight_dtype(fmt).bits, _side_bytes(fmt), widths[0]
    for bn in widths:
        if bm * bn * bk > K_.MAX_VALUES_PER_THREAD * threads:
            break
        best = bn     # else the widest the validity rule allows: the nearest to the goal
        codes = bn * bk * bits / 8
        if codes + max(bn, threads) * side <= 1.1 * (codes + bn * bk / group * side):
            return bn
    return best


def gemv_default_config(shape, dtype, device, group=128, *, fmt="int4", arch=None):
    m, n, k = shape
    bm = clamp_pow2(m, 1, GEMV_MAX_M)
    if device.type == "cpu":
        bk = _bk_for(group, k, 16, 256)
        bn = clamp_pow2(n, 8, 128)
        warps, split, stages = 8, 1, 1
    else:
        bk = _bk_for(group, k, 16, 32 if _straddling_on_amd(arch, fmt) else 128)
        warps, stages = 4, 2
        bn = 16 if bm > 2 else 32 if arch and arch.startswith("gfx") else _gemv_bn(fmt, bm, bk, group, 32 * warps)
        blocks = -(-n // bn)
        split = clamp_pow2(max(1, 264 // max(blocks, 1)), 1, 16)
        while split > 1 and k < split * bk:
            split //= 2
    config = {"BM": bm, "BN": bn, "BK": bk, "SPLIT_K": split, "num_warps": warps, "num_stages": stages}
    while not K_.GEMV_TUNABLES.is_valid(config) and config["BN"] > 8:
        config["BN"] //= 2
    while not K_.GEMV_TUNABLES.is_valid(config) and config["BK"] > 16:
        config["BK"] //= 2
    return checked_config(OP_NAME, config, K_.GEMV_TUNABLES, elem_bytes(dtype))


def gemm_default_config(shape, dtype, device, group=128, *, fmt="int4", arch=None):
    m, n, k = shape
    if device.type == "cpu":
        config = {"BM": clamp_pow2(m, 16, 128), "BN": clamp_pow2(n, 16, 128), "BK": _bk_for(group, k, 16, 128),
                  "num_warps": 8, "num_stages": 1}
    else:
        amd_odd = _straddling_on_amd(arch, fmt)
        # fp8's GEMM decode spills 3-7 SGPRs on gfx90a/gfx942 at BK = 64 too, none at 32
        amd_fp8 = bool(arch) and arch.startswith("gfx") and fmt.startswith("fp8")
        config = {"BM": clamp_pow2(m, 16, 64), "BN": clamp_pow2(n, 16, 32 if amd_odd else 64),
                  "BK": _bk_for(group, k, 16, 32 if amd_odd or amd_fp8 else 64), "num_warps": 4, "num_stages": 3}
    size = elem_bytes(dtype)
    while not K_.GEMM_TUNABLES.is_valid({**config, "elem_bytes": size}):
        if config["num_stages"] > 1:
            config["num_stages"] -= 1
        elif config["BN"] > 16:
            config["BN"] //= 2
        else:
            break
    return checked_config(OP_NAME, config, K_.GEMM_TUNABLES, size)


def config_for(kernel_id, shape, dtype, device, backend=None, group=128, fmt="int4", group_size=128, arch=None):
    """The tuned config for this call (looked up with its ``fmt`` and ``group`` flags), else the default.
    ``group`` is the kernels' GROUP constexpr; ``group_size`` the weight's (-1: per row). ``arch`` (a compile
    target; by default the device's) picks the default's tiles."""
    backend = backend or default_backend(device)
    tunables, default = ((K_.GEMV_TUNABLES, gemv_default_config) if kernel_id == GEMV_ID
                         else (K_.GEMM_TUNABLES, gemm_default_config))
    key = tuple(shape) + (("fmt", fmt), ("group", str(BLOCK_FORMATS.get(fmt, group_size))))
    provided = provided_config(kernel_id, key, dtype, device, backend, tunables, elem_bytes(dtype))
    if provided is not None and kernel_id == GEMV_ID and provided["BM"] < shape[0]:
        provided = None     # a GEMV program covers all M rows at once: an entry tuned at a smaller M cannot serve
    return provided or default(shape, dtype, device, group, fmt=fmt, arch=arch or device_arch(device))


def _accumulator(dtype):
    return tk.float64 if dtype == torch.float64 else tk.float32


def operands(x2, qweight, scales, zeros, global_scale, perm, bias, fmt, group_size, n):
    """The kernels' tensor arguments and format constexprs (None tensors become 1-element placeholders the
    kernels never read)."""
    k = x2.shape[1]
    dev = x2.device
    w = PackedTensor(qweight, weight_dtype(fmt), (n, k))
    s = PackedTensor(scales, D.float8_e4m3, (n, _groups(fmt, group_size, k))) \
        if fmt == "nvfp4" else scales
    z = zeros if zeros is not None else torch.zeros((1, 1), dtype=torch.uint8, device=dev)
    gs = global_scale if global_scale is not None else torch.ones(1, dtype=torch.float32, device=dev)
    p = perm if perm is not None else torch.zeros(1, dtype=torch.int32, device=dev)
    b = bias if bias is not None else torch.zeros(1, dtype=x2.dtype, device=dev)
    wkind, skind = format_flags(fmt)
    flags = dict(GROUP=kernel_group(group_size), WKIND=wkind, SKIND=skind, HAS_ZERO=zeros is not None,
                 HAS_PERM=perm is not None, HAS_BIAS=bias is not None)
    return (x2, w, s, z, gs, p, b), flags


def _groups(fmt, group_size, k):
    group = BLOCK_FORMATS.get(fmt, group_size)
    return 1 if group <= 0 else k // group


def gemv_launch(tensors, flags, y, config):
    """(grid, args, kwargs) of the GEMV kernel; ``y`` is fp32 (zeroed) when SPLIT_K > 1."""
    x2, n = tensors[0], y.shape[1]
    k = x2.shape[1]
    bk, split = config["BK"], config["SPLIT_K"]
    blocks_per_split = max(1, -(-(-(-k // bk)) // split))
    grid = (tk.cdiv(n, config["BN"]), split)
    kwargs = dict(BM=config["BM"], BN=config["BN"], BK=bk, SPLIT_K=split, ACC=_accumulator(x2.dtype),
                  num_warps=config["num_warps"], num_stages=config["num_stages"], **flags)
    return grid, (*tensors, y, blocks_per_split), kwargs


def finish_launch(acc, bias, y, config):
    """(grid, args, kwargs) of a split-K GEMV's finish kernel: ``y`` = the fp32 sums ``acc`` (+ ``bias``, a
    1-element placeholder when there is none), in y's dtype."""
    has_bias = bias is not None
    b = bias if has_bias else torch.zeros(1, dtype=y.dtype, device=y.device)
    return (tk.cdiv(y.shape[1], 128),), (acc, b, y), dict(HAS_BIAS=has_bias, BM=config["BM"], BN=128)


def gemm_launch(tensors, flags, y, config):
    m, n = y.shape
    grid = (tk.cdiv(m, config["BM"]), tk.cdiv(n, config["BN"]))
    kwargs = dict(BM=config["BM"], BN=config["BN"], BK=config["BK"], ACC=_accumulator(tensors[0].dtype),
                  num_warps=config["num_warps"], num_stages=config["num_stages"], **flags)
    return grid, (*tensors, y), kwargs


def _check_inputs(x, qweight, scales, zeros, global_scale, perm, bias, fmt, group_size, out_features):
    check_tensor(OP_NAME, "x", x)
    if x.dim() < 1:
        raise ValueError(f"tilekit::{OP_NAME}: 'x' must be at least 1-D, got a scalar")
    if fmt not in FORMATS:
        raise ValueError(f"tilekit::{OP_NAME}: unknown 'fmt' {fmt!r}")
    k, n = x.shape[-1], out_features
    bits = weight_dtype(fmt).bits
    want = (n, (k * bits + 31) // 32)
    if qweight.dtype != torch.int32 or tuple(qweight.shape) != want:
        raise ValueError(f"tilekit::{OP_NAME}: 'qweight' must be int32 words of shape {want} for {fmt} "
                         f"(N={n}, K={k}), got {qweight.dtype} {tuple(qweight.shape)}")
    g = _groups(fmt, group_size, k)
    want_s = (n, (g * 8 + 31) // 32) if fmt == "nvfp4" else (n, g)
    if tuple(scales.shape) != want_s:
        raise ValueError(f"tilekit::{OP_NAME}: 'scales' must have shape {want_s}, got {tuple(scales.shape)}")
    if zeros is not None and tuple(zeros.shape) != (n, g):
        raise ValueError(f"tilekit::{OP_NAME}: 'zeros' must have shape {(n, g)}, got {tuple(zeros.shape)}")
    if perm is not None and tuple(perm.shape) != (k,):
        raise ValueError(f"tilekit::{OP_NAME}: 'perm' must have shape {(k,)}, got {tuple(perm.shape)}")
    if bias is not None:
        if tuple(bias.shape) != (n,):
            raise ValueError(f"tilekit::{OP_NAME}: 'bias' must have shape {(n,)}, got {tuple(bias.shape)}")
        if bias.dtype != x.dtype:
            raise TypeError(f"tilekit::{OP_NAME}: 'bias' is {bias.dtype} but 'x' is {x.dtype}")
    for name, t in (("qweight", qweight), ("scales", scales), ("zeros", zeros), ("global_scale", global_scale),
                    ("perm", perm), ("bias", bias)):
        if t is not None and t.device != x.device:
            raise ValueError(f"tilekit::{OP_NAME}: '{name}' is on {t.device} but 'x' is on {x.device}")


def _forward(x, qweight, scales, zeros, global_scale, perm, bias, fmt, group_size, out_features):
    k, n = x.shape[-1], out_features
    lead = x.shape[:-1]
    y = torch.empty((*lead, n), dtype=x.dtype, device=x.device)
    x2 = x.reshape(-1, k)   # a view whenever the strides allow; the kernels read any strides
    m = x2.shape[0]
    if m == 0 or n == 0:
        return y
    if k == 0:
        return y.copy_(bias.expand_as(y)) if bias is not None else y.zero_()
    y2 = y.view(m, n)
    backend = backend_for(x.device)
    tensors, flags = operands(x2, qweight, scales, zeros, global_scale, perm, bias, fmt, group_size, n)
    group = flags["GROUP"]
    if m <= GEMV_MAX_M:
        config = config_for(GEMV_ID, (m, n, k), x.dtype, x.device, backend, group, fmt, group_size)
        target = y2 if config["SPLIT_K"] == 1 else torch.zeros((m, n), dtype=torch.float32, device=x.device)
        grid, args, kwargs = gemv_launch(tensors, flags, target, config)
        K_.lowbit_gemv_kernel[grid](*args, backend=backend, **kwargs)
        if config["SPLIT_K"] > 1:
            grid, args, kwargs = finish_launch(target, bias, y2, config)
            K_.lowbit_finish_kernel[grid](*args, backend=backend, **kwargs)
    else:
        config = config_for(GEMM_ID, (m, n, k), x.dtype, x.device, backend, group, fmt, group_size)
        grid, args, kwargs = gemm_launch(tensors, flags, y2, config)
        K_.lowbit_gemm_kernel[grid](*args, backend=backend, **kwargs)
    return y


@torch.library.custom_op("tilekit::lowbit_linear", mutates_args=())
def lowbit_linear_op(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                     global_scale: torch.Tensor | None, perm: torch.Tensor | None, bias: torch.Tensor | None,
                     fmt: str, group_size: int, out_features: int) -> torch.Tensor:
    _check_inputs(x, qweight, scales, zeros, global_scale, perm, bias, fmt, group_size, out_features)
    return _forward(x, qweight, scales, zeros, global_scale, perm, bias, fmt, group_size, out_features)


@lowbit_linear_op.register_fake
def _fake(x, qweight, scales, zeros, global_scale, perm, bias, fmt, group_size, out_features):
    _check_inputs(x, qweight, scales, zeros, global_scale, perm, bias, fmt, group_size, out_features)
    return x.new_empty((*x.shape[:-1], out_features))


def _dequantized_for_x(x, qweight, scales, zeros, global_scale, perm, fmt, group_size, n):
    """W (N, K) in x's column order, decoded by a DSL kernel (the backward pass's only use of it)."""
    k = x.shape[-1]
    wide = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = torch.zeros((n, k), dtype=wide, device=x.device)
    if n == 0 or k == 0:
        return out.to(x.dtype)
    tensors, flags = operands(x.reshape(-1, k), qweight, scales, zeros, global_scale, perm, None, fmt,
                              group_size, n)
    flags.pop("HAS_BIAS")
    bn, bk = clamp_pow2(n, 16, 64), clamp_pow2(k, 16, 64)
    K_.lowbit_dequant_kernel[(tk.cdiv(n, bn), tk.cdiv(k, bk))](*tensors[1:6], out, BN=bn, BK=bk,
                                                             ACC=_accumulator(x.dtype),
                                                             backend=backend_for(x.device), **flags)
    return out.to(x.dtype)


def _setup_context(ctx, inputs, output):
    x, qweight, scales, zeros, global_scale, perm, bias, fmt, group_size, out_features = inputs
    ctx.save_for_backward(x, qweight, scales, zeros, global_scale, perm)
    ctx.meta = (fmt, group_size, out_features, bias is not None)


def _backward(ctx, grad):
    x, qweight, scales, zeros, global_scale, perm = ctx.saved_tensors
    fmt, group_size, n, has_bias = ctx.meta
    grad_x = grad_bias = None
    g2 = grad.reshape(-1, n)
    if ctx.needs_input_grad[0]:
        w = _dequantized_for_x(x, qweight, scales, zeros, global_scale, perm, fmt, group_size, n)
        if g2.shape[0] == 0:
            grad_x = torch.zeros_like(x)
        else:
            grad_x = torch.ops.tilekit.matmul(g2.contiguous(), w).reshape(x.shape)
    if has_bias and ctx.needs_input_grad[6]:
        grad_bias = g2.sum(0)
    return grad_x, None, None, None, None, None, grad_bias, None, None, None


lowbit_linear_op.register_autograd(_backward, setup_context=_setup_context)


def lowbit_linear(x: torch.Tensor, qw: QuantizedWeight, *, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y (..., N) = x[..., perm] @ qw.dequantize().T + bias, accumulated in fp32."""
    if not isinstance(qw, QuantizedWeight):
        raise TypeError(f"tilekit::{OP_NAME}: 'qw' must be a tilekit.quant.QuantizedWeight, got "
                        f"{type(qw).__name__}")
    check_tensor(OP_NAME, "x", x)
    if x.shape[-1] != qw.shape[1]:
        raise ValueError(f"tilekit::{OP_NAME}: 'x' has {x.shape[-1]} features but 'qw' expects K = {qw.shape[1]}")
    scales = qw.scales.words if isinstance(qw.scales, PackedTensor) else qw.scales
    return torch.ops.tilekit.lowbit_linear(x, qw.qweight.words, scales, qw.zeros, qw.global_scale, qw.perm, bias,
                                           qw.fmt, qw.group_size, qw.shape[0])


def lowbit_linear_reference(x, qw, *, bias=None):
    """The PyTorch oracle: float64 x[..., perm] @ dequantize(qw).T + bias."""
    x64 = x.to(torch.float64)
    if qw.perm is not None:
        x64 = x64[..., qw.perm.long()]
    y = x64 @ qw.dequantize(torch.float64).to(x.device).T
    if bias is not None:
        y = y + bias.to(torch.float64)
    return y


def kernel_example(shape=(1, 4096, 4096), dtype=torch.float16, device=torch.device("cuda"), fmt="int4",
                   group_size=128, kernel_id=None, target=None):
    """(kernel, example args, launch kwargs) at (M, N, K): the GEMV for M <= 16, else the GEMM, at the default
    config for compile target ``target`` (else the device's). Meta tensors."""
    m, n, k = shape
    device = torch.device(device)
    group_size = BLOCK_FORMATS.get(fmt, group_size)     # as quantize makes it (GROUP = 128 never runs for nvfp4)
    kernel_id = kernel_id or (GEMV_ID if m <= GEMV_MAX_M else GEMM_ID)
    x = torch.empty(m, k, dtype=dtype, device="meta")
    wdt = weight_dtype(fmt)
    qweight = torch.empty(n, (k * wdt.bits + 31) // 32, dtype=torch.int32, device="meta")
    g = _groups(fmt, group_size, k)
    scales = (torch.empty(n, (g * 8 + 31) // 32, dtype=torch.int32, device="meta") if fmt == "nvfp4" else
              torch.empty(n, g, dtype=torch.uint8 if fmt == "mxfp4" else torch.float16, device="meta"))
    zeros = torch.empty(n, g, dtype=torch.uint8, device="meta") if fmt.startswith("uint") else None
    gs = torch.empty(1, dtype=torch.float32, device="meta") if fmt == "nvfp4" else None
    tensors, flags = operands(x, qweight, scales, zeros, gs, None, None, fmt, group_size, n)
    tensors = tuple(t.to("meta") if isinstance(t, (torch.Tensor, PackedTensor)) else t for t in tensors)
    backend = "reference" if device.type == "cpu" else "triton"
    group = flags["GROUP"]
    if kernel_id == GEMV_ID:
        config = config_for(GEMV_ID, (m, n, k), dtype, device, backend, group, fmt, group_size, target)
        y = torch.empty(m, n, dtype=dtype if config["SPLIT_K"] == 1 else torch.float32, device="meta")
        _, args, kwargs = gemv_launch(tensors, flags, y, config)
        return K_.lowbit_gemv_kernel, args, kwargs
    config = config_for(GEMM_ID, (m, n, k), dtype, device, backend, group, fmt, group_size, target)
    y = torch.empty(m, n, dtype=dtype, device="meta")
    _, args, kwargs = gemm_launch(tensors, flags, y, config)
    return K_.lowbit_gemm_kernel, args, kwargs
