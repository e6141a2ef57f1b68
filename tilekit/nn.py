"""``QuantLinear``: an ``nn.Linear`` whose weight is a ``tilekit.quant.QuantizedWeight``, run by
``tilekit.ops.lowbit_linear``; loaders for GPTQ (v1 / v2) and AWQ checkpoints, and ``quantize_model``.

Loading is a one-time host conversion to tilekit's layout (DESIGN.md, "Low-bit GEMM"):
- GPTQ ``qweight`` (K*bits/32, N) is packed along K, low bits first, so column n is already a dense
  little-endian bit stream of K codes: tilekit's row n. ``qzeros`` (K/g, N*bits/32) is a bit stream per
  group row. v1 stores zero - 1, v2 the zero. ``sym=True`` checkpoints (zero = 2^(bits-1)) load as signed
  ``intB`` codes with no zero points. A non-trivial ``g_idx`` (act-order) becomes ``perm``, a stable sort
  of k by group, so each group is contiguous and x is gathered in the kernel.
- AWQ ``qweight`` (K, N/8) holds columns 8j..8j+7 in word j, nibble i holding column 8j + [0,2,4,6,1,3,5,7][i];
  ``qzeros`` (K/g, N/8) the same; zeros are stored as they are.
"""
from __future__ import annotations

import numpy as np
import torch

from . import dtypes as D
from .packing import PackedTensor, codes as packed_codes, pack
from .quant import QuantizedWeight, quantize

GPTQ_BITS = (2, 3, 4, 8)
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def _uint_dtype(bits):
    return D.uint8 if bits == 8 else D.by_name(f"uint{bits}")


def _int_dtype(bits):
    return D.int8 if bits == 8 else D.by_name(f"int{bits}")


def _stream_codes(words, bits, count):
    """Codes of each row of ``words`` (int32, (R, W)) read as a little-endian bit stream of ``count`` codes."""
    words = words.detach().cpu().to(torch.int32).contiguous()
    return torch.from_numpy(packed_codes(PackedTensor(words, _uint_dtype(bits), (words.shape[0], count))))


class QuantLinear(torch.nn.Module):
    """y = x[..., perm] @ W.T + bias with W held quantized (see ``tilekit.quant``)."""

    def __init__(self, qw: QuantizedWeight, bias: torch.Tensor | None = None):
        super().__init__()
        self.fmt, self.group_size, self.shape = qw.fmt, qw.group_size, tuple(qw.shape)
        self.out_features, self.in_features = self.shape
        self._qdtype = qw.qweight.dtype
        self.register_buffer("qweight", qw.qweight.words)
        scales_packed = isinstance(qw.scales, PackedTensor)
        self._scale_shape = qw.scales.shape if scales_packed else None
        self.register_buffer("scales", qw.scales.words if scales_packed else qw.scales)
        self.register_buffer("zeros", qw.zeros)
        self.register_buffer("global_scale", qw.global_scale)
        self.register_buffer("perm", qw.perm)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone(), requires_grad=False)

    @property
    def qw(self) -> QuantizedWeight:
        scales = (PackedTensor(self.scales, D.float8_e4m3, self._scale_shape) if self._scale_shape is not None
                  else self.scales)
        return QuantizedWeight(PackedTensor(self.qweight, self._qdtype, self.shape), scales, self.zeros,
                               self.global_scale, self.perm, self.fmt, self.group_size, self.shape)

    def forward(self, x):
        from . import ops
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return ops.lowbit_linear(x, self.qw, bias=bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, fmt={self.fmt}, " \
               f"group_size={self.group_size}, bias={self.bias is not None}"

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, fmt, *, group_size=128, symmetric=True):
        qw = quantize(linear.weight.detach(), fmt, group_size=group_size, symmetric=symmetric)
        return cls(qw, None if linear.bias is None else linear.bias.detach())

    @classmethod
    def from_gptq(cls, qweight, qzeros, scales, *, g_idx=None, bits=4, group_size=128, sym=True,
                  checkpoint_format="gptq", bias=None):
        if bits not in GPTQ_BITS:
            raise ValueError(f"from_gptq: 'bits' must be one of {GPTQ_BITS}, got {bits}")
        if checkpoint_format not in ("gptq", "gptq_v2"):
            raise ValueError(f"from_gptq: 'checkpoint_format' must be 'gptq' or 'gptq_v2', got {checkpoint_format!r}")
        groups, n = scales.shape
        k = qweight.shape[0] * 32 // bits
        if qweight.shape != (k * bits // 32, n) or qweight.dtype != torch.int32:
            raise ValueError(f"from_gptq: 'qweight' must be int32 of shape (K*bits/32, N), got "
                             f"{qweight.dtype} {tuple(qweight.shape)}")
        g = k if group_size == -1 else group_size
        if groups != k // g:
            raise ValueError(f"from_gptq: 'scales' has {groups} groups, expected K/group_size = {k // g}")
        if qzeros.shape != (groups, n * bits // 32):
            raise ValueError(f"from_gptq: 'qzeros' must have shape {(groups, n * bits // 32)}, got "
                             f"{tuple(qzeros.shape)}")
        codes = _stream_codes(qweight.T.contiguous(), bits, k)          # (N, K)
        zeros = _stream_codes(qzeros, bits, n).T                        # (N, G)
        if checkpoint_format == "gptq":
            zeros = (zeros + 1) & ((1 << bits) - 1)                     # v1 stores zero - 1 (mod 2^bits)
        perm = None
        if g_idx is not None:
            g_idx = g_idx.detach().cpu().to(torch.int64)
            if not torch.equal(g_idx, torch.arange(k) // g):
                perm = torch.sort(g_idx, stable=True).indices
                codes = codes[:, perm]
        half = 1 << (bits - 1)
        scales16 = scales.detach().cpu().to(torch.float16).T.contiguous()
        if sym and bool((zeros == half).all()):
            fmt, packed, zeros_out = f"int{bits}", pack(codes - half, _int_dtype(bits)), None
        else:
            fmt, packed, zeros_out = f"uint{bits}", pack(codes, _uint_dtype(bits)), zeros.to(torch.uint8).contiguous()
        qw = QuantizedWeight(packed, scales16, zeros_out, None, None if perm is None else perm.to(torch.int32),
                             fmt, group_size if group_size > 0 else -1, (n, k))
        return cls(qw.to(qweight.device), bias)

    @classmethod
    def from_awq(cls, qweight, qzeros, scales, *, bits=4, group_size=128, bias=None):
        if bits != 4:
            raise ValueError(f"from_awq: only 4-bit AWQ checkpoints exist, got bits={bits}")
        k, words = qweight.shape
        n = words * 8
        groups = scales.shape[0]
        if scales.shape != (groups, n) or qzeros.shape != (groups, words):
            raise ValueError(f"from_awq: 'scales' must be (K/g, N) = {(groups, n)} and 'qzeros' (K/g, N/8) = "
                             f"{(groups, words)}, got {tuple(scales.shape)} and {tuple(qzeros.shape)}")

        def unpack_awq(w):
            u = w.detach().cpu().to(torch.int64) & 0xFFFFFFFF
            out = torch.empty(w.shape[0], w.shape[1] * 8, dtype=torch.int64)
            for nibble, col in enumerate(AWQ_ORDER):
                out[:, col::8] = (u >> (4 * nibble)) & 0xF
            return out

        codes = unpack_awq(qweight).T.contiguous()      # (N, K)
        zeros = unpack_awq(qzeros).T.contiguous()       # (N, G)
        qw = QuantizedWeight(pack(codes, D.uint4), scales.detach().cpu().to(torch.float16).T.contiguous(),
                             zeros.to(torch.uint8), None, None, "uint4", group_size, (n, k))
        return cls(qw.to(qweight.device), bias)


def quantize_model(model: torch.nn.Module, fmt, *, group_size=128, symmetric=True, skip=()):
    """Replace every ``nn.Linear`` of ``model`` (in place; returned) by a ``QuantLinear``, except those whose
    qualified name is in ``skip`` or starts with one of its entries followed by a dot."""
    skip = tuple(skip)

    def skipped(name):
        return any(name == s or name.startswith(s + ".") for s in skip)

    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, torch.nn.Linear) and not skipped(full):
                setattr(module, child_name, QuantLinear.from_linear(child, fmt, group_size=group_size,
                                                                    symmetric=symmetric))
    return model
