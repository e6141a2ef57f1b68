"""Typed construction of Tile IR: promotion, broadcasting and user-facing checks.

The front end calls these for every language construct; they build ops through one ``Builder``.
Errors here become ``CompileError``\\s at the builder's current source location.
"""
from __future__ import annotations

from . import dtypes as D
from .errors import CompileError
from .optable import ATOMIC_RMW, BINARY, COMPARE, FLOAT_ONLY_UNARY
from .ir import (Block, Loc, Op, TensorType, TileType, TypeRuleError, Value,
                 broadcast_shapes, infer_types)


class TensorRef:
    """A kernel tensor parameter as the front end sees it: ``.shape``, ``.dtype``, ``.ndim``."""

    def __init__(self, value: Value, builder):
        self.value = value
        self._builder = builder
        self._dims = None

    dtype = property(lambda self: self.value.type.dtype)
    ndim = property(lambda self: self.value.type.rank)

    @property
    def shape(self):
        if self._dims is None:
            # Hoisted to the function entry so every use, in any region, sees the same SSA value.
            self._dims = tuple(self._builder.create_at_entry("dim", [self.value], {"axis": i}).result
                               for i in range(self.ndim))
        return self._dims


class Builder:
    """Appends ops to the current block; computes result types with ``ir.infer_types``."""

    def __init__(self, entry: Block):
        self.entry = entry
        self.blocks = [entry]
        self.loc: Loc | None = None

    @property
    def block(self):
        return self.blocks[-1]

    def error(self, message):
        loc = self.loc
        return CompileError(message, loc.filename if loc else None, loc.lineno if loc else None,
                            loc.line if loc else None)

    def _make(self, name, operands, attrs, regions):
        op = Op(name, list(operands), dict(attrs or {}), [], list(regions or []), self.loc)
        try:
            types = infer_types(op)
        except TypeRuleError as e:
            raise self.error(str(e)) from None
        op.results = [Value(t) for t in types]
        for r in op.results:
            r.owner = op
        return op

    def create(self, name, operands, attrs=None, regions=None) -> Op:
        op = self._make(name, operands, attrs, regions)
        self.block.ops.append(op)
        return op

    def create_at_entry(self, name, operands, attrs=None) -> Op:
        op = self._make(name, operands, attrs, None)
        n_params_ops = 0
        while n_params_ops < len(self.entry.ops) and self.entry.ops[n_params_ops].name == "dim":
            n_params_ops += 1
        self.entry.ops.insert(n_params_ops, op)
        return op

    def push(self, block: Block):
        self.blocks.append(block)

    def pop(self):
        return self.blocks.pop()


# ---- values and constants -----------------------------------------------------------------------

def is_value(x):
    return isinstance(x, Value)


def python_dtype(x):
    if isinstance(x, bool):
        return D.bool_
    if isinstance(x, int):
        return D.int32 if -2**31 <= x < 2**31 else D.int64
    if isinstance(x, float):
        return D.float32
    return None


def const(b: Builder, value, dtype: D.DType) -> Value:
    if dtype.is_bool:
        value = bool(value)
    elif dtype.is_int:
        if isinstance(value, float):
            if not value.is_integer():
                raise b.error(f"constant {value} is not an integer but is used as {dtype}")
            value = int(value)
        lo, hi = D.int_range(dtype)
        if not lo <= value <= hi:
            raise b.error(f"constant {value} does not fit {dtype}")
    else:
        value = float(value)
    return b.create("const", [], {"value": value, "dtype": dtype}).result


def to_value(b: Builder, x, dtype: D.DType | None = None) -> Value:
    if isinstance(x, Value):
        return x
    if isinstance(x, TensorRef):
        raise b.error("a tensor parameter is not a tile: read it with tk.load(T, offsets, shape)")
    dt = dtype or python_dtype(x)
    if dt is None:
        raise b.error(f"{type(x).__name__} value {x!r} cannot be used as a tile or scalar")
    return const(b, x, dt)




# ---- promotion ----------------------------------------------------------------------------------

def promote(a: D.DType, b: D.DType) -> D.DType:
    if a is b:
        return a
    if a.is_float or b.is_float:
        fa = a if a.is_float else None
        fb = b if b.is_float else None
        if fa and fb:
            if fa.bits == fb.bits or max(fa.bits, fb.bits) <= 16:
                return D.float32  # fp16 with bf16 has no common 16-bit format
            return fa if fa.bits > fb.bits else fb
        f = fa or fb
        return f if f.bits >= 16 else D.float32
    if a.is_bool:
        return b
    if b.is_bool:
        return a
    bits = max(a.bits, b.bits, 32)
    signed = a.kind == "int" or b.kind == "int"
    return D.by_name(f"{'int' if signed else 'uint'}{bits}")


def _weak_dtype(py, other: D.DType):
    """The dtype a Python literal takes beside a typed operand (literals adopt the tile's type)."""
    if isinstance(py, bool):
        return other if other.is_bool else other
    if isinstance(py, int):
        return other if (other.is_int or other.is_float) else D.int32
    if isinstance(py, float):
        return other if other.is_float else D.float32
    return None


def _check_arith_dtype(b, dt, what):
    if dt.is_packed:
        raise b.error(f"{what} on a {dt} tile: convert sub-byte and small-float tiles first, e.g. x.to(tk.float16)")


def _coerce_pair(b: Builder, x, y):
    if not is_value(x) and not is_value(y):
        raise b.error("internal: both operands are constants")  # folded by the front end
    if is_value(x) and is_value(y):
        dt = promote(x.dtype, y.dtype)
        return cast(b, x, dt), cast(b, y, dt)
    if is_value(x):
        dt = _weak_dtype(y, x.dtype)
        if dt is None:
            raise b.error(f"cannot combine a tile with {y!r}")
        return cast(b, x, dt), const(b, y, dt)
    dt = _weak_dtype(x, y.dtype)
    if dt is None:
        raise b.error(f"cannot combine {x!r} with a tile")
    return const(b, x, dt), cast(b, y, dt)


def binary(b: Builder, op: str, x, y) -> Value:
    x, y = _coerce_pair(b, x, y)
    _check_arith_dtype(b, x.dtype, op)
    if op == "div" and not x.dtype.is_float:
        x, y = cast(b, x, D.float32), cast(b, y, D.float32)
    if op in BINARY and BINARY[op].int_only and x.dtype.is_float:
        raise b.error(f"bitwise {op} needs integer operands, got {x.dtype}")
    if op in COMPARE:
        return b.create("cmp", [x, y], {"op": op}).result
    return b.create("binary", [x, y], {"op": op}).result


def unary(b: Builder, op: str, x) -> Value:
    x = to_value(b, x)
    _check_arith_dtype(b, x.dtype, op)
    if op in FLOAT_ONLY_UNARY and not x.dtype.is_float:
        x = cast(b, x, D.float32)
    if op == "not" and not x.dtype.is_bool:
        x = binary(b, "ne", x, 0)
    return b.create("unary", [x], {"op": op}).result


def cast(b: Builder, x, dtype: D.DType) -> Value:
    dtype = D.to_dtype(dtype)
    if not is_value(x):
        return const(b, x, dtype)
    if x.dtype is dtype:
        return x
    if dtype.is_packed:
        raise b.error(f"cannot convert to {dtype}: sub-byte and small-float tiles come only from loads of "
                      f"packed tensors")
    return b.create("cast", [x], {"dtype": dtype}).result


def where(b: Builder, c, x, y) -> Value:
    c = to_value(b, c, D.bool_)
    if not c.dtype.is_bool:
        c = binary(b, "ne", c, 0)
    if is_value(x) or is_value(y):
        x, y = _coerce_pair(b, x, y)
    else:
        dt = promote(python_dtype(x), python_dtype(y))
        x, y = const(b, x, dt), const(b, y, dt)
    return b.create("where", [c, x, y]).result


def broadcast_to(b: Builder, x: Value, shape) -> Value:
    shape = tuple(shape)
    if x.shape == shape:
        return x
    if len(x.shape) < len(shape):
        if x.shape != ():
            raise b.error(f"cannot broadcast {x.shape} to {shape}")
    return b.create("broadcast", [x], {"shape": shape}).result


def expand_dims(b: Builder, x: Value, axis: int) -> Value:
    return b.create("expand_dims", [x], {"axis": axis}).result


def slice_tile(b: Builder, x: Value, axis: int, start, stop) -> Value:
    """``x[..., start:stop, ...]`` along ``axis`` with compile-time bounds (Python's rules for None and
    negative bounds); the length must be a power of two, as every tile dimension."""
    n = x.shape[axis]
    for v, nm in ((start, "start"), (stop, "stop")):
        if is_value(v) or not (v is None or (isinstance(v, int) and not isinstance(v, bool))):
            raise b.error(f"a tile slice needs compile-time int bounds; its {nm} is "
                          f"{'a runtime value' if is_value(v) else repr(v)} (use tk.load with an offset instead)")
    lo, hi, _ = slice(start, stop).indices(n)
    size = hi - lo
    if size <= 0:
        raise b.error(f"slice [{start}:{stop}] of an axis of size {n} is empty")
    if size & (size - 1):
        raise b.error(f"slice [{start}:{stop}] of an axis of size {n} has length {size}, which is not a power of "
                      f"two: tile dimensions must be powers of two")
    if size == n:
        return x
    return b.create("slice", [x], {"axis": axis, "start": lo, "size": size}).result


def index_tile(b: Builder, x: Value, axis: int, k) -> Value:
    """``x[..., k, ...]``: the compile-time index ``k`` of ``axis`` (negative counts from the end); the axis
    is removed."""
    n = x.shape[axis]
    if is_value(k) or not isinstance(k, int) or isinstance(k, bool):
        raise b.error(f"a tile index must be a compile-time int, got "
                      f"{'a runtime value' if is_value(k) else repr(k)}; use tk.where or tk.load with an offset")
    if not -n <= k < n:
        raise b.error(f"index {k} is out of range for an axis of size {n}")
    k %= n
    one = x if n == 1 else b.create("slice", [x], {"axis": axis, "start": k, "size": 1}).result
    shape = x.shape[:axis] + x.shape[axis + 1:]
    return b.create("reshape", [one], {"shape": tuple(shape)}).result


def normalize_axis(b: Builder, x: Value, axis) -> int:
    if not isinstance(axis, int):
        raise b.error(f"axis must be a compile-time int, got {axis!r}")
    r = len(x.shape)
    if not -r <= axis < r:
        raise b.error(f"axis {axis} is out of range for a {r}-d tile")
    return axis % r


def reduce(b: Builder, kind: str, x, axis) -> Value:
    x = to_value(b, x)
    if x.shape == ():
        raise b.error(f"tk.{kind} needs a tile, got a scalar")
    _check_arith_dtype(b, x.dtype, f"tk.{kind}")
    if kind == "sum" and x.dtype.is_bool:
        x = cast(b, x, D.int32)
    return b.create("reduce", [x], {"kind": kind, "axis": normalize_axis(b, x, axis)}).result


def check_tile_shape(b: Builder, shape, what):
    if isinstance(shape, int):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise b.error(f"{what} shape must be a tuple of compile-time ints, got {shape!r}")
    out = []
    for s in shape:
        if isinstance(s, Value):
            raise b.error(f"{what} shape {tuple('<runtime>' if isinstance(z, Value) else z for z in shape)} "
                          f"is not compile-time: tile shapes must be tk.constexpr or literals")
        if not isinstance(s, int) or isinstance(s, bool) or s <= 0:
            raise b.error(f"{what} shape entries must be positive ints, got {s!r}")
        if s & (s - 1):
            raise b.error(f"{what} shape {tuple(shape)} has {s}, which is not a power of two: tile dimensions "
                          f"must be powers of two (tensor shapes may be anything; edges are masked)")
        out.append(s)
    return tuple(out)


def mma(b: Builder, x, y, acc, allow_tf32=False) -> Value:
    x, y = to_value(b, x), to_value(b, y)
    for v, nm in ((x, "a"), (y, "b")):
        if len(v.shape) != 2:
            raise b.error(f"tk.mma operand {nm} must be a 2-D tile, got {v.type}")
        _check_arith_dtype(b, v.dtype, "tk.mma")
    if x.shape[1] != y.shape[0]:
        raise b.error(f"tk.mma shape mismatch: a is {x.shape}, b is {y.shape}; a's columns ({x.shape[1]}) "
                      f"must equal b's rows ({y.shape[0]})")
    if x.dtype is not y.dtype:
        dt = promote(x.dtype, y.dtype)
        x, y = cast(b, x, dt), cast(b, y, dt)
    out_shape = (x.shape[0], y.shape[1])
    acc_dt = D.int32 if x.dtype.is_int else (D.float64 if x.dtype is D.float64 else D.float32)
    if acc is None:
        acc = b.create("full", [const(b, 0, acc_dt)], {"shape": out_shape, "dtype": acc_dt}).result
    acc = to_value(b, acc)
    if acc.shape != out_shape:
        raise b.error(f"tk.mma accumulator is {acc.shape}, but a @ b is {out_shape}")
    if acc.dtype is not acc_dt:
        raise b.error(f"tk.mma accumulates in {acc_dt} for {x.dtype} operands, but acc is {acc.dtype}; "
                      f"create it with tk.zeros({out_shape}, {acc_dt!r})")
    return b.create("mma", [x, y, acc], {"allow_tf32": bool(allow_tf32)}).result


def memory_offsets(b: Builder, tensor: TensorRef, offsets, shape, what):
    if not isinstance(offsets, (tuple, list)):
        offsets = (offsets,)
    if len(offsets) != tensor.ndim:
        raise b.error(f"{what} of a {tensor.ndim}-d tensor needs {tensor.ndim} offsets, got {len(offsets)}")
    out = []
    for d, o in enumerate(offsets):
        v = to_value(b, o, D.int32)
        if not v.dtype.is_int:
            raise b.error(f"{what} offset {d} must be an integer, got {v.dtype}")
        if v.dtype is not D.int32 and v.dtype is not D.int64:
            v = cast(b, v, D.int32)
        if v.shape not in ((), (shape[d],)):
            raise b.error(f"{what} offset {d} is a {v.type} tile; an offset is a scalar, or a 1-D index tile "
                          f"with one entry per row of the tile ({shape[d]})")
        out.append(v)
    return out


def mask_value(b: Builder, mask, shape, what):
    m = to_value(b, mask, D.bool_)
    if not m.dtype.is_bool:
        raise b.error(f"{what} mask must be a boolean tile, got {m.type}")
    try:
        if broadcast_shapes(m.shape, shape) != tuple(shape):
            raise TypeRuleError("")
    except TypeRuleError:
        raise b.error(f"{what} mask of shape {m.shape} does not broadcast to the tile shape {tuple(shape)}") from None
    return broadcast_to(b, m, shape)


def load(b: Builder, tensor, offsets, shape=(), other=0, mask=None) -> Value:
    if not isinstance(tensor, TensorRef):
        raise b.error(f"tk.load reads a tensor parameter, got {type(tensor).__name__}")
    scalar = shape == () or shape == []
    if scalar:
        # One element: a 1-element tile, reshaped to a scalar (every backend holds it as one value).
        shape = (1,) * tensor.ndim
        if not isinstance(offsets, (tuple, list)):
            offsets = (offsets,)
        if any(is_value(o) and o.shape != () for o in offsets):
            raise b.error("a scalar tk.load (no shape) needs scalar offsets; pass a shape to gather a tile")
    shape = check_tile_shape(b, shape, "tk.load")
    if len(shape) != tensor.ndim:
        raise b.error(f"tk.load of a {tensor.ndim}-d tensor needs a {tensor.ndim}-d shape, got {shape}")
    offs = memory_offsets(b, tensor, offsets, shape, "tk.load")
    dt = tensor.dtype
    if dt.is_packed:
        if is_value(other) or other != 0:
            raise b.error(f"tk.load of a packed {dt} tensor fills masked elements with code 0; other= must be 0")
        other_v = const(b, 0, D.int32 if dt.is_int else D.float32)
    elif is_value(other):
        if other.shape != ():
            raise b.error(f"tk.load's other= must be a scalar (a constant or a runtime scalar), got a {other.type} tile")
        if other.dtype is not dt and (other.dtype.is_float and not dt.is_float):
            raise b.error(f"other= is {other.dtype}, which an {dt} tensor's tile cannot hold: convert it with "
                          f".to({dt!r})")
        other_v = cast(b, other, dt)
    else:
        if dt.is_int and isinstance(other, float) and not other.is_integer():
            raise b.error(f"other={other} cannot be held by an {dt} tensor")
        other_v = const(b, other, dt)
    ops = [tensor.value, *offs, other_v]
    if mask is not None:
        ops.append(mask_value(b, mask, shape, "tk.load"))
    tile = b.create("load", ops, {"shape": shape, "has_mask": mask is not None}).result
    if scalar:
        return b.create("reshape", [tile], {"shape": ()}).result
    return tile


def store(b: Builder, tensor, offsets, value, mask=None, atomic=None):
    """``tk.store``, or with ``atomic=kind`` the read-modify-write ``tk.atomic_<kind>`` (optable.ATOMIC_RMW)."""
    what = f"tk.atomic_{atomic}" if atomic else "tk.store"
    if not isinstance(tensor, TensorRef):
        raise b.error(f"{what} writes a tensor parameter, got {type(tensor).__name__}")
    dt = tensor.dtype
    if dt.is_packed:
        raise b.error(f"{what} into a packed {dt} tensor is not supported: packed tensors are read-only inputs; "
                      f"store into a standard dtype and pack on the host with tk.pack")
    v = to_value(b, value, dt)
    if v.dtype is not dt:
        if v.dtype.is_float != dt.is_float or v.dtype.is_bool != dt.is_bool:
            raise b.error(f"{what} of a {v.dtype} tile into a {dt} tensor: convert explicitly with .to({dt!r})")
        v = cast(b, v, dt)
    if atomic and not ATOMIC_RMW[atomic].dtypes(dt):
        raise b.error(f"{what} supports {ATOMIC_RMW[atomic].supported}, not {dt}")
    shape = v.shape if v.shape else (1,) * tensor.ndim
    if v.shape == ():
        v = broadcast_to(b, expand_all(b, v, tensor.ndim), shape)
    if len(shape) != tensor.ndim:
        raise b.error(f"{what} of a {len(shape)}-d tile into a {tensor.ndim}-d tensor")
    offs = memory_offsets(b, tensor, offsets, shape, what)
    ops = [tensor.value, *offs, v]
    if mask is not None:
        ops.append(mask_value(b, mask, shape, what))
    if atomic:
        b.create("atomic_rmw", ops, {"kind": atomic, "has_mask": mask is not None})
    else:
        b.create("store", ops, {"has_mask": mask is not None})


def expand_all(b, v, rank):
    for _ in range(rank):
        v = expand_dims(b, v, 0)
    return v


def full(b: Builder, shape, value, dtype) -> Value:
    shape = check_tile_shape(b, shape, "tk.full")
    dtype = D.to_dtype(dtype)
    if is_value(value) and value.shape != ():
        raise b.error("tk.full's value must be a scalar")
    v = cast(b, value, dtype) if is_value(value) else const(b, value, dtype)
    return b.create("full", [v], {"shape": shape, "dtype": dtype}).result


def arange(b: Builder, n) -> Value:
    (n,) = check_tile_shape(b, (n,), "tk.arange")
    return b.create("arange", [], {"n": n}).result


def cumsum(b: Builder, x, axis=0, reverse=False) -> Value:
    x = to_value(b, x)
    _check_arith_dtype(b, x.dtype, "tk.cumsum")
    if x.dtype.is_bool:
        x = cast(b, x, D.int32)
    return b.create("cumsum", [x], {"axis": normalize_axis(b, x, axis), "reverse": bool(reverse)}).result






__all__ = ["Builder", "TensorRef", "TileType", "TensorType"]


def broadcast_shapes_ok(a, b_) -> bool:
    try:
        broadcast_shapes(a, b_)
        return True
    except TypeRuleError:
        return False
