"""C types and literals shared by every C dialect.

Registers hold a tile in its *compute* type: fp16, bf16 and the small floats live in ``float`` and are
rounded to their format after every op (exactly what the reference executor does), sub-byte ints live in
``int``. Memory holds the *storage* type: fp16/bf16 as 16-bit patterns, bool as one byte, packed dtypes
as int32 words. The 8/16/64-bit integer names are typedefs every dialect prelude defines.
"""
from __future__ import annotations

import math

from ... import dtypes as D

_INT_CTYPE = {("int", 8): "tk_i8", ("uint", 8): "tk_u8", ("int", 16): "tk_i16", ("uint", 16): "tk_u16",
              ("int", 32): "int", ("uint", 32): "unsigned", ("int", 64): "tk_i64", ("uint", 64): "tk_u64"}


def rtype(dt: D.DType) -> str:
    """The C type a tile element of ``dt`` is held in, in registers and in shared memory."""
    if dt.is_bool:
        return "bool"
    if dt.is_float:
        return "double" if dt.bits == 64 else "float"
    if dt.is_packed:
        return "int"
    return _INT_CTYPE[(dt.kind, dt.bits)]


def stype(dt: D.DType, packed=False) -> str:
    """The C element type of a tensor of ``dt`` in global memory."""
    if packed or dt.is_packed:
        return "int"
    if dt.is_bool:
        return "tk_u8"
    if dt in (D.float16, D.bfloat16):
        return "tk_u16"
    return rtype(dt)


def wide_unsigned(dt: D.DType) -> str:
    """Unsigned type that integer arithmetic on ``dt`` wraps in (C's signed overflow is undefined)."""
    return "tk_u64" if dt.bits == 64 else "unsigned"


def literal(value, dt: D.DType) -> str:
    if dt.is_bool:
        return "true" if value else "false"
    if dt.is_float:
        value = float(value)
        dbl = dt.bits == 64
        if math.isnan(value):
            return "TK_NAN" if not dbl else "((double)TK_NAN)"
        if math.isinf(value):
            s = "TK_INF" if not dbl else "((double)TK_INF)"
            return s if value > 0 else f"(-{s})"
        r = repr(value)
        if "e" not in r and "." not in r and "inf" not in r:
            r += ".0"
        return r if dbl else r + "f"
    value = int(value)
    ct = rtype(dt)
    if dt.bits == 64:
        if dt.kind == "int" and value == -(1 << 63):
            return "((tk_i64)(-9223372036854775807 - 1))"
        return f"(({ct}){value}{'u' if dt.kind == 'uint' else ''})" if value >= 0 else f"(({ct})({value}))"
    if dt.kind == "int" and dt.bits == 32 and value == -(1 << 31):
        return "(-2147483647 - 1)"
    if ct == "int":
        return str(value) if value >= 0 else f"({value})"
    if ct == "unsigned":
        return f"{value}u"
    return f"(({ct})({value}))"


def float_lit(x: float, dt: D.DType) -> str:
    return literal(x, D.float64 if dt.bits == 64 else D.float32)


def is_narrow(dt: D.DType) -> bool:
    """Floats held in ``float`` that must be rounded back to their format after an op."""
    return dt.is_float and dt.bits < 32


def round_fn(dt: D.DType) -> str | None:
    if dt is D.float16:
        return "tk_rnd_h"
    if dt is D.bfloat16:
        return "tk_rnd_bf"
    if dt.is_small_float:
        return None  # small floats are never computed in, only loaded and converted
    return None
