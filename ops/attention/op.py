"""The ops: ``tilekit::attention`` (returns (o, lse)) and ``tilekit::attention_backward`` (dq, dk, dv), with
the wrapper ``attention(q, k, v, *, causal, scale, window, softcap, return_lse)`` of DESIGN.md."""
import math

import torch

import tilekit as tk

from ...backends import default_backend
from ..dispatch import (backend_for, check_same, check_tensor, checked_config, elem_bytes, gpu_arch_family, next_pow2,
                        provided_config)
from .kernels import (ATTENTION_TUNABLES, attention_bwd_delta_kernel, attention_bwd_dkdv_kernel,
                      attention_bwd_dq_kernel, attention_fwd_kernel, attention_varlen_bwd_delta_kernel,
                      attention_varlen_bwd_dkdv_kernel, attention_varlen_bwd_dq_kernel, attention_varlen_fwd_kernel)

OP_NAME = "attention"
MAX_HEAD_DIM = 256
KERNEL_IDS = {"fwd": "attention.fwd", "dkdv": "attention.bwd_dkdv", "dq": "attention.bwd_dq"}
# The varlen kernels tune and look up on their own: a dense entry (tuned, say, on AMD) could spill in the varlen
# kernel, whose gathered rows and cu_seqlens scalars need more registers. Their shape tuple is
# B (sequences), Hq, Hkv, max_seqlen_q, max_seqlen_k, D, with the dense flags.
VARLEN_KERNEL_IDS = {"fwd": "attention.varlen_fwd", "dkdv": "attention.varlen_bwd_dkdv",
                     "dq": "attention.varlen_bwd_dq"}


def _acc(dtype):
    return tk.float64 if dtype == torch.float64 else tk.float32


# GPU defaults per (architecture family, kernel, head-dim class 64 / 128 / 256), as (BM, BN, num_warps,
# num_stages). Each compiles with 0 spills (and, on NVIDIA, an empty stack frame) at Llama-3-8B shapes for
# D = 64, 96, 128 and 256 and
# keeps the matrix instructions (mma.sync, wgmma, mfma): tests/ops/attention/test_attention_aot.py, table in
# docs/ops/attention.md. Why they differ: on AMD the B operands of the dot products live in every wave's VGPRs
# and the ~66 shape/stride scalars crowd the SGPRs, so the tiles are smaller there (BN=32 forward; dK/dV with
# BN=16 keys and one stage); Hopper's wgmma wants a 64-row M per warp group (dK/dV BN=64, 8 warps), while
# sm_80's ptxas spills that dK/dV (32 registers and a 3.6 KB stack) and gets BM=32 instead (D=64: BN=32; 16x64
# had a 16-byte stack once dS took the scalar scale); its D=64 dQ takes 8 warps (4 warps sat at 255 registers and
# spilled 32 bytes once addresses summed their row offsets first; 8 warps: 136 registers). D=256: the dK/dV
# program carries two BN x 256 fp32 accumulators and its K, V tiles, so BM=16, BN=32 (16 on AMD) and one stage
# (BN=64 for wgmma spilled 240+ bytes on sm_90); the sm_90 forward and dQ keep BM=64 for wgmma.
_GPU_DEFAULTS = {
    "sm_80": {"fwd": {64: (128, 64, 4, 2), 128: (64, 64, 8, 2), 256: (32, 32, 8, 2)},
              "dq": {64: (128, 32, 8, 2), 128: (64, 64, 8, 2), 256: (32, 32, 8, 2)},
              "dkdv": {64: (32, 32, 4, 2), 128: (32, 64, 8, 2), 256: (16, 32, 8, 1)}},
    "sm_90": {"fwd": {64: (128, 64, 4, 2), 128: (64, 64, 8, 2), 256: (64, 32, 8, 2)},
              "dq": {64: (128, 32, 4, 2), 128: (64, 64, 8, 2), 256: (64, 32, 8, 2)},
              "dkdv": {64: (64, 64, 8, 2), 128: (64, 64, 8, 1), 256: (16, 32, 8, 1)}},
    "amd": {"fwd": {64: (128, 32, 4, 2), 128: (128, 32, 8, 2), 256: (64, 16, 8, 2)},
            "dq": {64: (64, 32, 4, 2), 128: (64, 16, 4, 2), 256: (32, 16, 8, 2)},
            "dkdv": {64: (32, 16, 4, 1), 128: (32, 16, 4, 1), 256: (16, 16, 8, 1)}},
}

# The varlen kernels (gathered rows, cu_seqlens scalars) where the dense entry spills: AMD forward 13-22 SGPR
# spills at BN=32, sm_80 dK/dV D=64 a 24-byte stack, sm_90 forward D=64 8 bytes and dK/dV D=128 8 bytes; D=256
# dK/dV: sm_90 16x32 had an 8-byte stack (16x16, two stages: 170 registers), sm_80 takes two stages; sm_80 D=256
# forward and dQ: 8 warps held 128 registers and spilled 8 and 16 bytes, 4 warps fit (192, 196 registers).
_VARLEN_OVERRIDES = {
    "sm_80": {"fwd": {256: (32, 32, 4, 2)}, "dq": {256: (32, 32, 4, 2)}, "dkdv": {64: (16, 32, 4, 2), 256: (16, 32, 8, 2)}},
    "sm_90": {"fwd": {64: (128, 64, 8, 2)}, "dkdv": {128: (128, 64, 8, 1), 256: (16, 16, 8, 2)}},
    "amd": {"fwd": {64: (128, 16, 4, 2), 128: (128, 16, 8, 2)}},
}


def _default_config(shape, dtype, device, kernel="fwd", target=None, varlen=False):
    """The default config of kernel "fwd", "dq" or "dkdv" (the delta kernel takes dq's BM) for shape
    B,Hq,Hkv,Sq,Skv,D on ``device``; ``target`` (an AOT target name) picks the architecture instead;
    ``varlen`` the packed-sequence kernels' entry."""
    B, Hq, Hkv, Sq, Skv, D = shape
    bd = max(16, next_pow2(D))
    if device.type == "cpu" and target is None:
        # The reference executor pays per program and loop iteration: large tiles.
        config = {"BM": min(64, max(16, next_pow2(Sq))), "BN": min(64, max(16, next_pow2(Skv))),
                  "num_warps": 4, "num_stages": 1}
    else:
        family = gpu_arch_family(device, target)
        dim = 64 if bd <= 64 else 128 if bd <= 128 else 256
        entry = _VARLEN_OVERRIDES[family].get(kernel, {}).get(dim) if varlen else None
        bm, bn, warps, stages = entry or _GPU_DEFAULTS[family][kernel][dim]
        config = {"BM": bm, "BN": bn, "num_warps": warps, "num_stages": stages}
    return checked_config(OP_NAME, {**config, "BD": bd}, ATTENTION_TUNABLES, elem_bytes(dtype))


def tuning_flags(causal, window):
    """The call's tuning flags as the dispatch table keys them (``causal=1``, ``window=L:R``); a plain call
    has none."""
    flags = [("causal", "1")] if causal else []
    if window is not None and tuple(int(w) for w in window) != (-1, -1):
        flags.append(("window", f"{int(window[0])}:{int(window[1])}"))
    return tuple(flags)


def parse_tuning_flags(flags):
    """``{"causal": "1", "window": "L:R"}`` (as ``tilekit tune --shapes`` gives them) -> (causal, window)."""
    causal = str(flags.get("causal", "0")).lower() in ("1", "true", "yes")
    window = flags.get("window")
    if window is not None:
        try:
            left, right = (int(w) for w in str(window).split(":"))
        except ValueError:
            raise ValueError(f"attention: flag window={window!r} must be L:R (integers, -1 unbounded)") from None
        window = (left, right)
    return causal, window


_KERNEL_OF_ID = {**{v: k for k, v in KERNEL_IDS.items()}, **{v: k for k, v in VARLEN_KERNEL_IDS.items()}}


def _config_for(shape, dtype, device, backend, kernel_id, flags=(), target=None, varlen=False):
    bd = max(16, next_pow2(shape[-1]))
    provided = provided_config(kernel_id, tuple(shape) + tuple(flags), dtype, device, backend,
                               ATTENTION_TUNABLES, elem_bytes(dtype)) if target is None else None
    config = dict(provided) if provided else _default_config(shape, dtype, device, _KERNEL_OF_ID[kernel_id], target,
                                                                     varlen)
    config["BD"] = bd
    return config


def window_bounds(causal, window, Sq, Skv):
    """(left, right) as the kernels take them: an unbounded side becomes a sentinel past every distance,
    and causal clips right to 0."""
    unbounded = Sq + Skv + 1
    left, right = (-1, -1) if window is None else (int(window[0]), int(window[1]))
    left = unbounded if left < 0 else left
    right = unbounded if right < 0 else right
    if causal:
        right = min(right, 0)
    return left, right


def _check_inputs(q, k, v, window):
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(OP_NAME, name, t, ranks=(4,))
    check_same(OP_NAME, {"q": q, "k": k, "v": v})
    B, Hq, Sq, D = q.shape
    if k.shape != v.shape:
        raise ValueError(f"tilekit::attention: 'k' is {tuple(k.shape)} but 'v' is {tuple(v.shape)}; they must match")
    if k.shape[0] != B or k.shape[3] != D:
        raise ValueError(f"tilekit::attention: 'k' is {tuple(k.shape)}; it must be (B={B}, Hkv, Skv, D={D})")
    if k.shape[1] == 0 or Hq % k.shape[1]:
        raise ValueError(f"tilekit::attention: 'q' has {Hq} heads, not a multiple of k's {k.shape[1]}")
    if D > MAX_HEAD_DIM:
        raise ValueError(f"tilekit::attention: head dim D={D} is more than {MAX_HEAD_DIM}")
    if window is not None and len(window) != 2:
        raise ValueError(f"tilekit::attention: 'window' must be (left, right), got {window}")


def _scale(scale, D):
    return float(scale) if scale is not None else (1.0 / math.sqrt(D) if D else 1.0)


def fwd_launch_args(q, k, v, o, lse, config, scale, softcap, left, right):
    B, Hq, Sq, D = q.shape
    grid = (tk.cdiv(Sq, config["BM"]), B * Hq)
    kwargs = dict(SOFTCAP=softcap is not None, BM=config["BM"], BN=config["BN"], BD=config["BD"],
                  ACC=_acc(q.dtype), num_warps=config["num_warps"], num_stages=config["num_stages"])
    return grid, (q, k, v, o, lse, scale, float(softcap or 1.0), left, right), kwargs


def _window_list(window):
    return None if window is None else [int(window[0]), int(window[1])]


@torch.library.custom_op("tilekit::attention", mutates_args=())
def attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float,
                 window: list[int] | None, softcap: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    _check_inputs(q, k, v, window)
    B, Hq, Sq, D = q.shape
    Hkv, Skv = k.shape[1], k.shape[2]
    o = torch.empty((B, Hq, Sq, D), dtype=q.dtype, device=q.device)
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    lse = torch.empty((B, Hq, Sq), dtype=lse_dtype, device=q.device)
    if o.numel() == 0 or lse.numel() == 0:
        return o, lse.fill_(-float("inf")) if Skv == 0 else lse
    if Skv == 0:
        return o.zero_(), lse.fill_(-float("inf"))
    backend = backend_for(q.device)
    config = _config_for((B, Hq, Hkv, Sq, Skv, D), q.dtype, q.device, backend, KERNEL_IDS["fwd"],
                         tuning_flags(causal, window))
    left, right = window_bounds(causal, window, Sq, Skv)
    grid, args, kwargs = fwd_launch_args(q, k, v, o, lse, config, scale, softcap, left, right)
    attention_fwd_kernel[grid](*args, backend=backend, **kwargs)
    return o, lse


@attention_op.register_fake
def _attention_fake(q, k, v, causal, scale, window, softcap):
    _check_inputs(q, k, v, window)
    B, Hq, Sq, D = q.shape
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return q.new_empty((B, Hq, Sq, D)), q.new_empty((B, Hq, Sq), dtype=lse_dtype)


@torch.library.custom_op("tilekit::attention_backward", mutates_args=())
def attention_backward_op(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                          lse: torch.Tensor, causal: bool, scale: float, window: list[int] | None,
                          softcap: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_inputs(q, k, v, window)
    B, Hq, Sq, D = q.shape
    Hkv, Skv = k.shape[1], k.shape[2]
    dq = torch.zeros((B, Hq, Sq, D), dtype=q.dtype, device=q.device)
    dk = torch.zeros((B, Hkv, Skv, D), dtype=k.dtype, device=k.device)
    dv = torch.zeros((B, Hkv, Skv, D), dtype=v.dtype, device=v.device)
    if dq.numel() == 0 or dk.numel() == 0:
        return dq, dk, dv
    do = do.to(q.dtype)
    backend = backend_for(q.device)
    shape = (B, Hq, Hkv, Sq, Skv, D)
    left, right = window_bounds(causal, window, Sq, Skv)
    acc = _acc(q.dtype)
    soft = float(softcap or 1.0)
    delta = torch.empty((B, Hq, Sq), dtype=lse.dtype, device=q.device)
    flags = tuning_flags(causal, window)
    cfg = _config_for(shape, q.dtype, q.device, backend, KERNEL_IDS["dq"], flags)
    attention_bwd_delta_kernel[(tk.cdiv(Sq, cfg["BM"]), B * Hq)](
        o, do, delta, BM=cfg["BM"], BD=cfg["BD"], ACC=acc, backend=backend, num_warps=cfg["num_warps"])
    common = dict(SOFTCAP=softcap is not None, ACC=acc, backend=backend)
    attention_bwd_dq_kernel[(tk.cdiv(Sq, cfg["BM"]), B * Hq)](
        q, k, v, do, lse, delta, dq, scale, soft, left, right, BM=cfg["BM"], BN=cfg["BN"], BD=cfg["BD"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], **common)
    cfg = _config_for(shape, q.dtype, q.device, backend, KERNEL_IDS["dkdv"], flags)
    attention_bwd_dkdv_kernel[(tk.cdiv(Skv, cfg["BN"]), B * Hkv)](
        q, k, v, do, lse, delta, dk, dv, scale, soft, left, right, BM=cfg["BM"], BN=cfg["BN"], BD=cfg["BD"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], **common)
    return dq, dk, dv


@attention_backward_op.register_fake
def _attention_backward_fake(do, q, k, v, o, lse, causal, scale, window, softcap):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, causal, scale, window, softcap = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse)
    ctx.args = (causal, scale, window, softcap)
    ctx.mark_non_differentiable(lse)


def _backward(ctx, do, dlse):
    q, k, v, o, lse = ctx.saved_tensors
    if do is None:
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v), None, None, None, None
    dq, dk, dv = torch.ops.tilekit.attention_backward(do.contiguous(), q, k, v, o, lse, *ctx.args)
    return dq, dk, dv, None, None, None, None


attention_op.register_autograd(_backward, setup_context=_setup_context)


def attention(q, k, v, *, causal=False, scale=None, window=None, softcap=None, return_lse=False):
    """softmax(scale * q k^T (softcapped, masked)) v for q (B, Hq, Sq, D), k, v (B, Hkv, Skv, D)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(OP_NAME, name, t, ranks=(4,))
    if softcap is not None and not softcap > 0:
        raise ValueError(f"tilekit::attention: 'softcap' must be positive, got {softcap}")
    o, lse = torch.ops.tilekit.attention(q, k, v, bool(causal), _scale(scale, q.shape[-1]), _window_list(window),
                                         None if softcap is None else float(softcap))
    return (o, lse) if return_lse else o


def attention_reference(q, k, v, *, causal=False, scale=None, window=None, softcap=None, return_lse=False):
    """The PyTorch oracle, in float64 when given float64 (else fp32, cast back)."""
    wide = torch.float64 if q.dtype == torch.float64 else torch.float32
    B, Hq, Sq, D = q.shape
    Hkv, Skv = k.shape[1], k.shape[2]
    group = Hq // Hkv
    qw, kw, vw = (t.to(wide) for t in (q, k, v))
    kw, vw = kw.repeat_interleave(group, dim=1), vw.repeat_interleave(group, dim=1)
    s = _scale(scale, D) * qw @ kw.transpose(-1, -2)
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    i = torch.arange(Sq, device=q.device)[:, None]
    j = torch.arange(Skv, device=q.device)[None, :]
    left, right = window_bounds(causal, window, Sq, Skv)
    visible = (j >= i + Skv - Sq - left) & (j <= i + Skv - Sq + right)
    s = s.masked_fill(~visible, -float("inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - torch.where(torch.isinf(lse), 0, lse)[..., None])
    o = (p @ vw).to(q.dtype)
    return (o, lse.to(torch.float64 if wide == torch.float64 else torch.float32)) if return_lse else o


def kernel_example(shape=(1, 32, 8, 4096, 4096, 128), dtype=torch.float16, device=torch.device("cuda"),
                   kernel="fwd", causal=True, target=None):
    """(kernel, example args, launch kwargs) for `tilekit show/compile`; shape is B,Hq,Hkv,Sq,Skv,D. ``target``
    (an AOT target name) picks that architecture's default config; without it the device decides (sm_90
    with no GPU to ask)."""
    B, Hq, Hkv, Sq, Skv, D = shape
    meta = dict(dtype=dtype, device="meta")
    q, o, do, dq = (torch.empty(B, Hq, Sq, D, **meta) for _ in range(4))
    k, v, dk, dv = (torch.empty(B, Hkv, Skv, D, **meta) for _ in range(4))
    lse = torch.empty(B, Hq, Sq, dtype=torch.float32, device="meta")
    delta = torch.empty(B, Hq, Sq, dtype=torch.float32, device="meta")
    device = torch.device(device)
    if kernel not in KERNEL_IDS:
        raise ValueError(f"kernel_example: unknown attention kernel {kernel!r}")
    config = _config_for(shape, dtype, device, "reference" if device.type == "cpu" else "triton",
                         KERNEL_IDS[kernel], target=target)
    left, right = window_bounds(causal, None, Sq, Skv)
    kw = dict(SOFTCAP=False, BM=config["BM"], BN=config["BN"], BD=config["BD"], ACC=tk.float32,
              num_warps=config["num_warps"], num_stages=config["num_stages"])
    scale = 1.0 / math.sqrt(D)
    if kernel == "fwd":
        return attention_fwd_kernel, (q, k, v, o, lse, scale, 1.0, left, right), kw
    if kernel == "dkdv":
        return attention_bwd_dkdv_kernel, (q, k, v, do, lse, delta, dk, dv, scale, 1.0, left, right), kw
    if kernel == "dq":
        return attention_bwd_dq_kernel, (q, k, v, do, lse, delta, dq, scale, 1.0, left, right), kw
    raise ValueError(f"kernel_example: unknown attention kernel {kernel!r}")


def varlen_kernel_example(shape=(8, 32, 8, 4096, 4096, 128), dtype=torch.float16, device=torch.device("cuda"),
                          kernel="fwd", causal=True, target=None):
    """(kernel, example args, launch kwargs) of a varlen kernel: B sequences of Sq queries and Skv keys packed
    (meta tensors), at the varlen default config of ``target`` (or the device's)."""
    if kernel not in KERNEL_IDS:
        raise ValueError(f"varlen_kernel_example: unknown attention kernel {kernel!r}")
    B, Hq, Hkv, Sq, Skv, D = shape
    meta = dict(dtype=dtype, device="meta")
    q, o, do, dq = (torch.empty(B * Sq, Hq, D, **meta) for _ in range(4))
    k, v, dk, dv = (torch.empty(B * Skv, Hkv, D, **meta) for _ in range(4))
    lse, delta = (torch.empty(Hq, B * Sq, dtype=torch.float32, device="meta") for _ in range(2))
    cu_q, cu_k = (torch.empty(B + 1, dtype=torch.int32, device="meta") for _ in range(2))
    config = _default_config(shape, dtype, torch.device(device), kernel, target, varlen=True)
    left, right = window_bounds(causal, None, Sq, Skv)
    kw = dict(SOFTCAP=False, BM=config["BM"], BN=config["BN"], BD=config["BD"], ACC=tk.float32,
              num_warps=config["num_warps"], num_stages=config["num_stages"])
    tail = (cu_q, cu_k, 1.0 / math.sqrt(D), 1.0, left, right)
    if kernel == "fwd":
        return attention_varlen_fwd_kernel, (q, k, v, o, lse) + tail, kw
    if kernel == "dkdv":
        return attention_varlen_bwd_dkdv_kernel, (q, k, v, do, lse, delta, dk, dv) + tail, kw
    return attention_varlen_bwd_dq_kernel, (q, k, v, do, lse, delta, dq) + tail, kw


def _check_cu(name, cu, batch_plus_one=None):
    if not isinstance(cu, torch.Tensor):
        raise TypeError(f"tilekit::attention_varlen: '{name}' must be a torch.Tensor")
    if cu.dtype != torch.int32:
        raise TypeError(f"tilekit::attention_varlen: '{name}' must be int32, got {cu.dtype}")
    if cu.dim() != 1 or cu.shape[0] < 1 or (batch_plus_one is not None and cu.shape[0] != batch_plus_one):
        raise ValueError(f"tilekit::attention_varlen: '{name}' must be (batch + 1,), got {tuple(cu.shape)}")


VARLEN = "attention_varlen"


def _check_varlen_inputs(q, k, v, cu_seqlens_q, cu_seqlens_k, window):
    """Shapes, dtypes and devices (no data reads: the fake implementation runs this too)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(VARLEN, name, t, ranks=(3,))
    check_same(VARLEN, {"q": q, "k": k, "v": v})
    _check_cu("cu_seqlens_q", cu_seqlens_q)
    _check_cu("cu_seqlens_k", cu_seqlens_k, cu_seqlens_q.shape[0])
    total_q, Hq, D = q.shape
    if k.shape != v.shape or k.shape[2] != D or k.shape[1] == 0 or Hq % k.shape[1]:
        raise ValueError(f"tilekit::attention_varlen: 'k' {tuple(k.shape)} / 'v' {tuple(v.shape)} do not fit "
                         f"'q' {tuple(q.shape)}")
    if D > MAX_HEAD_DIM:
        raise ValueError(f"tilekit::attention_varlen: head dim D={D} is more than {MAX_HEAD_DIM}")
    if window is not None and len(window) != 2:
        raise ValueError(f"tilekit::attention_varlen: 'window' must be (left, right), got {window}")


def _check_varlen_data(q, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k):
    """The offsets against the tensors and the max lengths, when the offsets are on the CPU (no sync)."""
    if cu_seqlens_q.device.type != "cpu" or cu_seqlens_k.device.type != "cpu":
        return
    if int(cu_seqlens_q[-1]) != q.shape[0]:
        raise ValueError(f"tilekit::attention_varlen: cu_seqlens_q[-1] = {int(cu_seqlens_q[-1])} but q has "
                         f"{q.shape[0]} rows")
    for name, cu, cap in (("max_seqlen_q", cu_seqlens_q, max_seqlen_q), ("max_seqlen_k", cu_seqlens_k, max_seqlen_k)):
        if cu.shape[0] > 1 and int((cu[1:] - cu[:-1]).max()) > cap:
            raise ValueError(f"tilekit::attention_varlen: '{name}' = {cap} is less than a sequence's length")


def _lse_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _varlen_setup(q, k, cu_seqlens_q, max_seqlen_q, max_seqlen_k, causal, window, kernel):
    """(backend, config, left, right) of a varlen launch; the config is the varlen kernel's own entry
    (VARLEN_KERNEL_IDS) at (batch, Hq, Hkv, max_seqlen_q, max_seqlen_k, D)."""
    backend = backend_for(q.device)
    batch = cu_seqlens_q.shape[0] - 1
    shape = (batch, q.shape[1], k.shape[1], int(max_seqlen_q), max(1, int(max_seqlen_k)), q.shape[2])
    config = _config_for(shape, q.dtype, q.device, backend, VARLEN_KERNEL_IDS[kernel], tuning_flags(causal, window),
                         varlen=True)
    left, right = window_bounds(causal, window, int(max_seqlen_q), int(max_seqlen_k))
    return backend, config, left, right


def _varlen_kwargs(q, config, softcap):
    return dict(SOFTCAP=softcap is not None, BM=config["BM"], BN=config["BN"], BD=config["BD"], ACC=_acc(q.dtype),
                num_warps=config["num_warps"], num_stages=config["num_stages"])


def varlen_fwd_launch_args(q, k, v, o, lse, cu_q, cu_k, max_seqlen_q, config, scale, softcap, left, right):
    """(grid, args, kwargs) of the varlen forward; the op and its tuning (attention.varlen_fwd) launch this."""
    grid = (tk.cdiv(int(max_seqlen_q), config["BM"]), (cu_q.shape[0] - 1) * q.shape[1])
    return grid, (q, k, v, o, lse, cu_q, cu_k, scale, float(softcap or 1.0), left, right), \
        _varlen_kwargs(q, config, softcap)


def varlen_dq_launch_args(q, k, v, do, lse, delta, dq, cu_q, cu_k, max_seqlen_q, config, scale, softcap, left,
                          right):
    grid = (tk.cdiv(int(max_seqlen_q), config["BM"]), (cu_q.shape[0] - 1) * q.shape[1])
    return grid, (q, k, v, do, lse, delta, dq, cu_q, cu_k, scale, float(softcap or 1.0), left, right), \
        _varlen_kwargs(q, config, softcap)


def varlen_dkdv_launch_args(q, k, v, do, lse, delta, dk, dv, cu_q, cu_k, max_seqlen_k, config, scale, softcap,
                            left, right):
    grid = (tk.cdiv(int(max_seqlen_k), config["BN"]), (cu_q.shape[0] - 1) * k.shape[1])
    return grid, (q, k, v, do, lse, delta, dk, dv, cu_q, cu_k, scale, float(softcap or 1.0), left, right), \
        _varlen_kwargs(q, config, softcap)


@torch.library.custom_op("tilekit::attention_varlen", mutates_args=())
def attention_varlen_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                        cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, causal: bool, scale: float,
                        window: list[int] | None, softcap: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    _check_varlen_inputs(q, k, v, cu_seqlens_q, cu_seqlens_k, window)
    _check_varlen_data(q, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    total_q, Hq, D = q.shape
    batch = cu_seqlens_q.shape[0] - 1
    o = torch.zeros((total_q, Hq, D), dtype=q.dtype, device=q.device)
    lse = torch.full((Hq, total_q), -float("inf"), dtype=_lse_dtype(q.dtype), device=q.device)
    if o.numel() == 0 or batch == 0 or max_seqlen_q <= 0 or k.shape[0] == 0:
        return o, lse
    backend, config, left, right = _varlen_setup(q, k, cu_seqlens_q, max_seqlen_q, max_seqlen_k, causal, window,
                                                 "fwd")
    grid, args, kwargs = varlen_fwd_launch_args(q, k, v, o, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, config,
                                                scale, softcap, left, right)
    attention_varlen_fwd_kernel[grid](*args, backend=backend, **kwargs)
    return o, lse


@attention_varlen_op.register_fake
def _attention_varlen_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, scale, window,
                           softcap):
    _check_varlen_inputs(q, k, v, cu_seqlens_q, cu_seqlens_k, window)
    return q.new_empty(q.shape), q.new_empty((q.shape[1], q.shape[0]), dtype=_lse_dtype(q.dtype))


@torch.library.custom_op("tilekit::attention_varlen_backward", mutates_args=())
def attention_varlen_backward_op(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 o: torch.Tensor, lse: torch.Tensor, cu_seqlens_q: torch.Tensor,
                                 cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, causal: bool,
                                 scale: float, window: list[int] | None,
                                 softcap: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_varlen_inputs(q, k, v, cu_seqlens_q, cu_seqlens_k, window)
    total_q, Hq, D = q.shape
    batch = cu_seqlens_q.shape[0] - 1
    dq, dk, dv = (torch.zeros(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
    if dq.numel() == 0 or dk.numel() == 0 or batch == 0 or max_seqlen_q <= 0 or max_seqlen_k <= 0:
        return dq, dk, dv
    do = do.to(q.dtype)
    acc = _acc(q.dtype)
    backend, cfg, left, right = _varlen_setup(q, k, cu_seqlens_q, max_seqlen_q, max_seqlen_k, causal, window, "dq")
    delta = torch.empty((Hq, total_q), dtype=lse.dtype, device=q.device)
    attention_varlen_bwd_delta_kernel[(tk.cdiv(total_q, cfg["BM"]), Hq)](
        o, do, delta, BM=cfg["BM"], BD=cfg["BD"], ACC=acc, backend=backend, num_warps=cfg["num_warps"])
    grid, args, kwargs = varlen_dq_launch_args(q, k, v, do, lse, delta, dq, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                               cfg, scale, softcap, left, right)
    attention_varlen_bwd_dq_kernel[grid](*args, backend=backend, **kwargs)
    backend, cfg, left, right = _varlen_setup(q, k, cu_seqlens_q, max_seqlen_q, max_seqlen_k, causal, window,
                                              "dkdv")
    grid, args, kwargs = varlen_dkdv_launch_args(q, k, v, do, lse, delta, dk, dv, cu_seqlens_q, cu_seqlens_k,
                                                 max_seqlen_k, cfg, scale, softcap, left, right)
    attention_varlen_bwd_dkdv_kernel[grid](*args, backend=backend, **kwargs)
    return dq, dk, dv


@attention_varlen_backward_op.register_fake
def _attention_varlen_backward_fake(do, q, k, v, o, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                    causal, scale, window, softcap):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _varlen_setup_context(ctx, inputs, output):
    q, k, v, cu_q, cu_k, max_q, max_k, causal, scale, window, softcap = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, cu_q, cu_k)
    ctx.args = (max_q, max_k, causal, scale, window, softcap)
    ctx.mark_non_differentiable(lse)


def _varlen_backward(ctx, do, dlse):
    q, k, v, o, lse, cu_q, cu_k = ctx.saved_tensors
    none = (None,) * 8
    if do is None:
        return (torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)) + none
    dq, dk, dv = torch.ops.tilekit.attention_varlen_backward(do.contiguous(), q, k, v, o, lse, cu_q, cu_k, *ctx.args)
    return (dq, dk, dv) + none


attention_varlen_op.register_autograd(_varlen_backward, setup_context=_varlen_setup_context)


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, causal=False, scale=None,
                     window=None, softcap=None, return_lse=False):
    """Attention over packed sequences (flash-attn's layout): q (total_q, Hq, D), k, v (total_k, Hkv, D),
    int32 cu_seqlens (batch + 1,). Autograd: dq, dk, dv."""
    _check_varlen_inputs(q, k, v, cu_seqlens_q, cu_seqlens_k, window)
    if softcap is not None and not softcap > 0:
        raise ValueError(f"tilekit::attention_varlen: 'softcap' must be positive, got {softcap}")
    o, lse = torch.ops.tilekit.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q),
                                                int(max_seqlen_k), bool(causal), _scale(scale, q.shape[-1]),
                                                _window_list(window), None if softcap is None else float(softcap))
    return (o, lse) if return_lse else o
