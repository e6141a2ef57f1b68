"""tilekit's dtypes: standard ones, sub-byte integers (1-8 bits) and small floats.

A dtype knows its bit width, its kind and, for small floats, its exponent/mantissa layout. It maps to
a torch dtype where torch has one. Sub-byte and small-float data live in torch as *packed* int32 words;
see :mod:`tilekit.packing`.
"""
from __future__ import annotations

import numpy as np
import torch


class DType:
    __slots__ = ("name", "bits", "kind", "exponent_bits", "mantissa_bits", "bias", "ieee_specials",
                 "torch_dtype", "short")

    def __init__(self, name, bits, kind, short, torch_dtype=None, exponent_bits=0, mantissa_bits=0,
                 bias=0, ieee_specials=False):
        self.name = name
        self.bits = bits
        self.kind = kind  # "float" | "int" | "uint" | "bool"
        self.short = short
        self.torch_dtype = torch_dtype
        self.exponent_bits = exponent_bits
        self.mantissa_bits = mantissa_bits
        self.bias = bias
        self.ieee_specials = ieee_specials  # e5m2 has inf/nan like IEEE; the others do not

    is_float = property(lambda self: self.kind == "float")
    is_int = property(lambda self: self.kind in ("int", "uint"))
    is_signed = property(lambda self: self.kind in ("int", "float"))
    is_bool = property(lambda self: self.kind == "bool")

    @property
    def is_packed(self):
        """Stored packed in int32 words: no torch dtype of its own holds it."""
        return self.torch_dtype is None

    @property
    def is_small_float(self):
        return self.is_float and self.bits <= 8

    def __repr__(self):
        return f"tk.{self.name}"

    def __reduce__(self):
        return (by_name, (self.name,))


_ALL: dict[str, DType] = {}


def _make(name, bits, kind, short, torch_dtype=None, **kw):
    dt = DType(name, bits, kind, short, torch_dtype, **kw)
    _ALL[name] = dt
    return dt


bool_ = _make("bool_", 1, "bool", "i1", torch.bool)
float16 = _make("float16", 16, "float", "fp16", torch.float16, exponent_bits=5, mantissa_bits=10, bias=15)
bfloat16 = _make("bfloat16", 16, "float", "bf16", torch.bfloat16, exponent_bits=8, mantissa_bits=7, bias=127)
float32 = _make("float32", 32, "float", "fp32", torch.float32, exponent_bits=8, mantissa_bits=23, bias=127)
float64 = _make("float64", 64, "float", "fp64", torch.float64, exponent_bits=11, mantissa_bits=52, bias=1023)
int8 = _make("int8", 8, "int", "i8", torch.int8)
int16 = _make("int16", 16, "int", "i16", torch.int16)
int32 = _make("int32", 32, "int", "i32", torch.int32)
int64 = _make("int64", 64, "int", "i64", torch.int64)
uint8 = _make("uint8", 8, "uint", "u8", torch.uint8)
uint16 = _make("uint16", 16, "uint", "u16", getattr(torch, "uint16", None))
uint32 = _make("uint32", 32, "uint", "u32", getattr(torch, "uint32", None))

# Sub-byte integers: int1..int7 and uint1..uint7 (8 bits are the standard int8/uint8 above).
for _b in range(1, 8):
    globals()[f"int{_b}"] = _make(f"int{_b}", _b, "int", f"i{_b}")
    globals()[f"uint{_b}"] = _make(f"uint{_b}", _b, "uint", f"u{_b}")

# Small floats (OCP MX / FP8 formats). None has inf; e4m3 keeps one NaN code (S.1111.111), e5m2 is IEEE-like.
float4_e2m1 = _make("float4_e2m1", 4, "float", "f4e2m1", exponent_bits=2, mantissa_bits=1, bias=1)
float6_e3m2 = _make("float6_e3m2", 6, "float", "f6e3m2", exponent_bits=3, mantissa_bits=2, bias=3)
float6_e2m3 = _make("float6_e2m3", 6, "float", "f6e2m3", exponent_bits=2, mantissa_bits=3, bias=1)
float8_e4m3 = _make("float8_e4m3", 8, "float", "f8e4m3", exponent_bits=4, mantissa_bits=3, bias=7)
float8_e5m2 = _make("float8_e5m2", 8, "float", "f8e5m2", exponent_bits=5, mantissa_bits=2, bias=15,
                    ieee_specials=True)

float8_e4m3.torch_dtype = None  # stored packed; torch's float8 tensors convert through tk.pack
float8_e5m2.torch_dtype = None

_FROM_TORCH = {dt.torch_dtype: dt for dt in _ALL.values() if dt.torch_dtype is not None}


def by_name(name: str) -> DType:
    try:
        return _ALL[name]
    except KeyError:
        raise ValueError(f"unknown tilekit dtype {name!r}; known: {', '.join(sorted(_ALL))}") from None


def all_dtypes():
    return list(_ALL.values())


def from_torch(td: torch.dtype) -> DType:
    try:
        return _FROM_TORCH[td]
    except KeyError:
        raise TypeError(f"torch dtype {td} has no tilekit equivalent; supported: "
                        f"{', '.join(str(t) for t in _FROM_TORCH)}") from None


def to_dtype(x) -> DType:
    """Accept a tilekit dtype, a torch dtype, or a name."""
    if isinstance(x, DType):
        return x
    if isinstance(x, torch.dtype):
        return from_torch(x)
    if isinstance(x, str):
        return by_name(x)
    raise TypeError(f"expected a dtype, got {x!r}")


def int_range(dt: DType):
    """(min, max) of an integer dtype."""
    if dt.kind == "int":
        return -(1 << (dt.bits - 1)), (1 << (dt.bits - 1)) - 1
    if dt.kind == "uint":
        return 0, (1 << dt.bits) - 1
    if dt.kind == "bool":
        return 0, 1
    raise TypeError(f"{dt} is not an integer dtype")


def numpy_compute_dtype(dt: DType):
    """The numpy dtype the reference executor holds a tile of ``dt`` in.

    Floats narrower than 32 bits are held in float32 and rounded to their format after every op.
    """
    if dt.is_bool:
        return np.bool_
    if dt.is_float:
        return np.float64 if dt.bits == 64 else np.float32
    if dt.bits == 64:
        return np.int64 if dt.kind == "int" else np.uint64
    if dt.bits == 32 and dt.kind == "uint":
        return np.uint32
    return np.int32 if dt.bits <= 32 else np.int64


# ---- small-float codecs (also used for fp16/bf16 rounding) -------------------------------------

class CodeRule:
    """How a packed code becomes a value: the one definition of the decode rule, which the reference
    (``decode``, in numpy), Triton (``backends/triton/lower.py``) and C (``backends/cstyle/memory.py``)
    each render. Ints: ``(code ^ sign_bit) - sign_bit`` when signed. Small floats: sign, exponent and
    mantissa fields; a normal value is assembled as the fp32 bit pattern ``((e + f32_exp_offset) << 23) |
    (m << f32_man_shift)``, a subnormal is ``m * subnormal_scale`` (exact in fp32); ``special`` says what
    the top exponent means: "ieee" (inf for m == 0, else NaN), "nan_at_max" (NaN only for the all-ones
    mantissa, e4m3) or "none"."""

    def __init__(self, dt: DType):
        self.dtype = dt
        self.bits = dt.bits
        self.is_float = dt.is_float
        self.sign_bit = 1 << (dt.bits - 1) if (dt.is_float or dt.kind == "int") else 0
        if dt.is_float:
            e, m = dt.exponent_bits, dt.mantissa_bits
            self.exp_shift, self.exp_mask, self.man_mask = m, (1 << e) - 1, (1 << m) - 1
            self.f32_exp_offset, self.f32_man_shift = 127 - dt.bias, 23 - m
            self.subnormal_scale = 2.0 ** (1 - dt.bias - m)
            self.special = "ieee" if dt.ieee_specials else "nan_at_max" if dt is float8_e4m3 else "none"

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes (int64) to values: sign-extended ints, or small-float values as float64 (NaN for NaNs)."""
        if not self.is_float:
            return (codes ^ self.sign_bit) - self.sign_bit if self.sign_bit else codes
        sign = np.where(codes & self.sign_bit, -1.0, 1.0)
        exp = (codes >> self.exp_shift) & self.exp_mask
        man = codes & self.man_mask
        normal = (1.0 + man / (self.man_mask + 1)) * np.exp2(exp.astype(np.float64) - 127 + self.f32_exp_offset)
        vals = sign * np.where(exp == 0, man * self.subnormal_scale, normal)
        top = exp == self.exp_mask
        if self.special == "ieee":
            vals = np.where(top, np.where(man == 0, sign * np.inf, np.nan), vals)
        elif self.special == "nan_at_max":
            vals = np.where(top & (man == self.man_mask), np.nan, vals)
        return vals


def code_rule(dt: DType) -> CodeRule:
    return CodeRule(dt)


def small_float_table(dt: DType) -> np.ndarray:
    """Value of every code of a small float, as float64 (NaN for NaN codes)."""
    return code_rule(dt).decode(np.arange(1 << dt.bits, dtype=np.int64))


def small_float_max(dt: DType) -> float:
    t = small_float_table(dt)
    return float(np.nanmax(t[np.isfinite(t)]))


def encode_small_float(x: np.ndarray, dt: DType) -> np.ndarray:
    """Round float values to the nearest code of ``dt`` (ties to even); raises on values out of range."""
    x = np.asarray(x, dtype=np.float64)
    table = small_float_table(dt)
    if np.isnan(x).any():
        nan_codes = np.flatnonzero(np.isnan(table))
        if nan_codes.size == 0:
            raise ValueError(f"{dt} has no NaN encoding, and the input holds NaN")
    finite = np.isfinite(table)
    limit = small_float_max(dt)
    bad = np.isfinite(x) & (np.abs(x) > limit)
    if bad.any():
        raise ValueError(f"values out of range for {dt} (max finite {limit}): e.g. {x[bad].flat[0]}")
    if np.isinf(x).any() and not dt.ieee_specials:
        raise ValueError(f"{dt} has no infinity, and the input holds inf")
    pos_codes = np.flatnonzero(finite & (table >= 0) & ((np.arange(table.size) >> (dt.bits - 1)) == 0))
    pos_vals = table[pos_codes]
    order = np.argsort(pos_vals, kind="stable")
    pos_codes, pos_vals = pos_codes[order], pos_vals[order]
    mag = np.abs(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0))
    hi = np.clip(np.searchsorted(pos_vals, mag, side="left"), 0, pos_vals.size - 1)
    lo = np.clip(hi - 1, 0, pos_vals.size - 1)
    d_hi = np.abs(pos_vals[hi] - mag)
    d_lo = np.abs(mag - pos_vals[lo])
    take_lo = (d_lo < d_hi) | ((d_lo == d_hi) & ((pos_codes[lo] & 1) == 0))
    code = np.where(take_lo, pos_codes[lo], pos_codes[hi])
    code = np.where(np.signbit(x) & (code != 0) | (np.signbit(x) & (mag == 0)), code | (1 << (dt.bits - 1)), code)
    if dt.ieee_specials:
        top = ((1 << dt.exponent_bits) - 1) << dt.mantissa_bits
        code = np.where(np.isposinf(x), top, code)
        code = np.where(np.isneginf(x), top | (1 << (dt.bits - 1)), code)
    if np.isnan(x).any():
        code = np.where(np.isnan(x), np.flatnonzero(np.isnan(table))[0], code)
    return code.astype(np.int64)


def round_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest, ties to even), returned as float32."""
    x = np.asarray(x, dtype=np.float32)
    shape = x.shape  # np.ascontiguousarray makes 0-d arrays 1-d; keep scalars scalar
    x = np.ascontiguousarray(x).reshape(shape)
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    out = rounded.astype(np.uint32).view(np.float32)
    return np.where(np.isnan(x), x, out)


def round_to_format(x: np.ndarray, dt: DType) -> np.ndarray:
    """Round a float array to what ``dt`` can hold, keeping numpy float32/float64 storage."""
    if dt is float16:
        return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)
    if dt is bfloat16:
        return round_to_bf16(x)
    if dt is float32:
        return np.asarray(x, dtype=np.float32)
    if dt is float64:
        return np.asarray(x, dtype=np.float64)
    if dt.is_small_float:
        return small_float_table(dt)[encode_small_float(x, dt)].astype(np.float32)
    raise TypeError(f"{dt} is not a float dtype")
