"""Weight quantization for ``tilekit.ops.lowbit_linear``: ``quantize(w, fmt)`` -> ``QuantizedWeight``.

Formats and their rules are DESIGN.md's "Low-bit GEMM" table; ``QuantizedWeight.dequantize()`` is the oracle
the kernels are tested against. All arithmetic is float64 on the host; rounding is half-to-even (numpy's
``rint``); scales are rounded to their storage format *before* codes are computed, so that
``dequantize`` reproduces ``w`` as closely as the stored scale allows.

Storage (see ops/lowbit/README.md for a drawing):
- ``qweight``: ``tk.PackedTensor`` of logical shape (N, K) in ``tilekit/packing.py``'s layout (each row a
  dense little-endian bit stream). Element dtype: ``tk.intB`` (symmetric ints; asymmetric signed ints hold
  ``u - 2^(B-1)``), ``tk.uintB``, ``tk.uint1`` for ``int1`` (bit 1 = -1, bit 0 = +1), or the small float.
- ``scales``: (N, G) with G = K / group_size (1 for group_size -1): fp16; ``mxfp4``: uint8 e8m0 exponents
  (value ``2^(e - 127)``); ``nvfp4``: a ``tk.PackedTensor`` of ``tk.float8_e4m3``.
- ``zeros``: (N, G) integers (uint8 for ``uintB``, int8 offset by 2^(B-1) for asymmetric ``intB``) or None.
- ``global_scale``: nvfp4's fp32 tensor scale, shape (1,), else None.
- ``perm``: int32 (K,) act-order permutation (``y = x[..., perm] @ W.T``), else None.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from . import dtypes as D
from .packing import PackedTensor, pack, unpack

INT_FORMATS = tuple(f"int{b}" for b in range(1, 9)) + tuple(f"uint{b}" for b in range(1, 9))
FLOAT_FORMATS = {"fp4_e2m1": D.float4_e2m1, "fp6_e3m2": D.float6_e3m2, "fp6_e2m3": D.float6_e2m3,
                 "fp8_e4m3": D.float8_e4m3, "fp8_e5m2": D.float8_e5m2}
BLOCK_FORMATS = {"mxfp4": 32, "nvfp4": 16}
FORMATS = INT_FORMATS + tuple(FLOAT_FORMATS) + tuple(BLOCK_FORMATS)

E8M0_BIAS = 127
E4M3_MAX = 448.0
E2M1_MAX = 6.0


def _int_dtype(kind, bits):
    if bits == 8:
        return D.int8 if kind == "int" else D.uint8
    return D.by_name(f"{kind}{bits}")


@dataclasses.dataclass
class QuantizedWeight:
    qweight: PackedTensor
    scales: object          # torch.Tensor, or a PackedTensor of float8_e4m3 (nvfp4)
    zeros: torch.Tensor | None
    global_scale: torch.Tensor | None
    perm: torch.Tensor | None
    fmt: str
    group_size: int
    shape: tuple

    @property
    def groups(self):
        return self.shape[1] // self.group_size if self.group_size > 0 else 1

    @property
    def bits(self):
        return self.qweight.dtype.bits

    @property
    def packed_bytes(self):
        """Bytes of the weight bit stream (what a GEMV must read once)."""
        return self.qweight.words.numel() * 4

    def code_values(self) -> torch.Tensor:
        """The stored codes' values (float64, (N, K)): ints sign-extended, small floats decoded, int1 as ±1."""
        v = unpack(self.qweight, torch.float64)
        return 1.0 - 2.0 * v if self.fmt == "int1" else v

    def scale_values(self) -> torch.Tensor:
        """Per-group scales as float64, (N, G), the nvfp4 tensor scale folded in."""
        if self.fmt == "mxfp4":
            return torch.exp2(self.scales.to(torch.float64) - E8M0_BIAS)
        if self.fmt == "nvfp4":
            return unpack(self.scales, torch.float64) * self.global_scale.to(torch.float64)
        return self.scales.to(torch.float64)

    def dequantize(self, dtype=torch.float32) -> torch.Tensor:
        """The (N, K) weight these codes stand for (columns in ``perm`` order when act-ordered)."""
        n, k = self.shape
        g = self.group_size if self.group_size > 0 else max(k, 1)
        v = self.code_values()
        if self.zeros is not None:
            v = v - self.zeros.to(torch.float64).repeat_interleave(g, dim=1)[:, :k]
        s = self.scale_values().repeat_interleave(g, dim=1)[:, :k]
        return (v * s).to(dtype)

    def to(self, device):
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return dataclasses.replace(self, qweight=self.qweight.to(device), scales=move(self.scales),
                                   zeros=move(self.zeros), global_scale=move(self.global_scale),
                                   perm=move(self.perm))


def _check(w, fmt, group_size):
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        raise TypeError(f"quantize: 'w' must be a floating torch.Tensor, got {type(w).__name__}")
    if w.dim() != 2:
        raise ValueError(f"quantize: 'w' must be 2-D (N, K), got shape {tuple(w.shape)}")
    if fmt not in FORMATS:
        raise ValueError(f"quantize: unknown fmt {fmt!r}; choose one of {', '.join(FORMATS)}")
    k = w.shape[1]
    if fmt in BLOCK_FORMATS:
        block = BLOCK_FORMATS[fmt]
        if k % block:
            raise ValueError(f"quantize: {fmt} needs K % {block} == 0, got K = {k}")
        return block
    if group_size == -1:
        return -1
    if not isinstance(group_size, int) or group_size <= 0 or group_size % 8 or k % group_size:
        raise ValueError(f"quantize: 'group_size' must be -1 or a multiple of 8 that divides K = {k}, "
                         f"got {group_size}")
    return group_size


def _grouped(w64, group):
    """(N, G, g) view of the weight's groups."""
    n, k = w64.shape
    g = group if group > 0 else k
    return w64.reshape(n, k // g if g else 0, g)


def _fp16(x):
    return x.astype(np.float16).astype(np.float64)


def _safe_div(a, b):
    return np.where(b[..., None] != 0, a / np.where(b == 0, 1.0, b)[..., None], 0.0)


def quantize(w: torch.Tensor, fmt: str, *, group_size: int = 128, symmetric: bool = True,
             perm: torch.Tensor | None = None) -> QuantizedWeight:
    """Quantize ``w`` (N, K) to ``fmt`` with one scale per output row and group of ``group_size`` columns
    (-1: per row). ``mxfp4`` / ``nvfp4`` use their fixed blocks (32 / 16) whatever ``group_size`` says.
    ``perm`` (optional, (K,)): act-order, quantize ``w[:, perm]`` and gather ``x[..., perm]`` at run time."""
    group = _check(w, fmt, group_size)
    device = w.device
    if perm is not None:
        perm = perm.to(torch.int64).cpu()
        w = w.detach().cpu()[:, perm]
    w64 = w.detach().cpu().to(torch.float64).numpy()
    n, k = w64.shape
    wg = _grouped(w64, group)
    zeros = global_scale = None
    if fmt in INT_FORMATS:
        kind, bits = ("uint", int(fmt[4:])) if fmt.startswith("uint") else ("int", int(fmt[3:]))
        if fmt == "int1":
            scale = _fp16(np.abs(wg).mean(axis=2)) if wg.shape[2] else np.zeros(wg.shape[:2])
            codes = (wg < 0).astype(np.int64)                    # the sign bit: 1 is -1
            wdtype = D.uint1
        elif kind == "int" and symmetric:
            qmax = 2 ** (bits - 1) - 1
            scale = _fp16(np.abs(wg).max(axis=2, initial=0.0) / qmax)
            codes = np.clip(np.rint(_safe_div(wg, scale)), -qmax, qmax).astype(np.int64)
            wdtype = _int_dtype("int", bits)
        else:
            qmax = 2 ** bits - 1
            hi, lo = wg.max(axis=2, initial=-np.inf), wg.min(axis=2, initial=np.inf)
            hi, lo = np.where(np.isfinite(hi), hi, 0.0), np.where(np.isfinite(lo), lo, 0.0)
            scale = _fp16((hi - lo) / qmax)
            zero = np.clip(np.rint(np.where(scale != 0, -lo / np.where(scale == 0, 1.0, scale), 0.0)), 0, qmax)
            codes = np.clip(np.rint(_safe_div(wg, scale)) + zero[..., None], 0, qmax).astype(np.int64)
            offset = 2 ** (bits - 1) if kind == "int" else 0
            codes, zero = codes - offset, zero - offset
            wdtype = _int_dtype(kind, bits)
            zeros = torch.from_numpy(zero.astype(np.int64)).to(torch.int8 if offset else torch.uint8)
        scales = torch.from_numpy(scale).to(torch.float16)
        qweight = pack(torch.from_numpy(codes.reshape(n, k)), wdtype)
    elif fmt in FLOAT_FORMATS:
        wdtype = FLOAT_FORMATS[fmt]
        fmax = D.small_float_max(wdtype)
        scale = _fp16(np.abs(wg).max(axis=2, initial=0.0) / fmax)
        vals = np.clip(_safe_div(wg, scale), -fmax, fmax)
        scales = torch.from_numpy(scale).to(torch.float16)
        qweight = pack(torch.from_numpy(vals.reshape(n, k)), wdtype)
    elif fmt == "mxfp4":
        absmax = np.abs(wg).max(axis=2, initial=0.0)
        exp = np.where(absmax > 0, np.floor(np.log2(np.where(absmax > 0, absmax, 1.0))) - 2, -E8M0_BIAS)
        exp = np.clip(exp, -E8M0_BIAS, E8M0_BIAS)
        vals = np.clip(wg / np.exp2(exp)[..., None], -E2M1_MAX, E2M1_MAX)
        scales = torch.from_numpy((exp + E8M0_BIAS).astype(np.uint8))
        qweight = pack(torch.from_numpy(vals.reshape(n, k)), D.float4_e2m1)
    else:  # nvfp4
        amax = float(np.abs(w64).max(initial=0.0))
        tensor_scale = float(np.float32(amax / (E4M3_MAX * E2M1_MAX))) if amax > 0 else 1.0
        block = np.clip(np.abs(wg).max(axis=2, initial=0.0) / E2M1_MAX / tensor_scale, 0, E4M3_MAX)
        block_packed = pack(torch.from_numpy(block), D.float8_e4m3)
        block = unpack(block_packed, torch.float64).numpy()
        vals = np.clip(_safe_div(wg, block * tensor_scale), -E2M1_MAX, E2M1_MAX)
        scales = block_packed
        global_scale = torch.tensor([tensor_scale], dtype=torch.float32)
        qweight = pack(torch.from_numpy(vals.reshape(n, k)), D.float4_e2m1)
    qw = QuantizedWeight(qweight=qweight, scales=scales, zeros=zeros, global_scale=global_scale,
                         perm=None if perm is None else perm.to(torch.int32), fmt=fmt, group_size=group,
                         shape=(n, k))
    return qw.to(device)
