"""Tile IR: typed SSA over tiles, with nested regions for loops, branches and scan combiners.

A kernel becomes one ``Function``. Every ``Value`` has a ``TileType`` (shape + dtype; shape ``()`` is a
scalar) or, for kernel tensor parameters, a ``TensorType``. ``Op``\\s live in ``Block``\\s; an op with
regions (``for``, ``if``, ``scan``) holds blocks that end in a ``yield``. Result types of every op come
from ``infer_types`` alone, so construction, the verifier and shape inference share one rule set.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from . import dtypes as D
from .optable import ATOMIC_RMW, BINARY, COMPARE, FLOAT_ONLY_UNARY, IR_OPS, REDUCE, UNARY  # noqa: F401  (the op set)


@dataclass(frozen=True)
class TileType:
    shape: tuple
    dtype: D.DType

    @property
    def is_scalar(self):
        return self.shape == ()

    def __str__(self):
        if not self.shape:
            return self.dtype.short
        return f"tile<{'x'.join(map(str, self.shape))}x{self.dtype.short}>"


@dataclass(frozen=True)
class TensorType:
    """A tensor in global memory. ``packed``: held in int32 words (sub-byte ints, small floats).
    ``large``: its elements span 2**31 bytes or more, so element offsets need 64-bit arithmetic."""
    dtype: D.DType
    rank: int
    packed: bool = False
    large: bool = False
    # the earlier tensor parameter whose sizes (strides) this one's equal at launch: a lowering may use
    # that one's, so that masks and offsets of same-shaped tensors are computed once (K and V, Q and O)
    shape_of: str | None = None
    strides_of: str | None = None

    def __str__(self):
        flags = (", packed" if self.packed else "") + (", large" if self.large else "")
        flags += (f", shape of {self.shape_of}" if self.shape_of else "") + \
            (f", strides of {self.strides_of}" if self.strides_of else "")
        return f"tensor<{self.rank}d x {self.dtype.short}{flags}>"


_ids = itertools.count()


class Value:
    __slots__ = ("type", "name", "id", "owner")

    def __init__(self, type, name=None):
        self.type = type
        self.name = name
        self.id = next(_ids)
        self.owner = None

    shape = property(lambda self: self.type.shape)
    dtype = property(lambda self: self.type.dtype)

    def __repr__(self):
        return f"%{self.name or self.id}: {self.type}"


@dataclass
class Loc:
    filename: str
    lineno: int
    line: str = ""

    def __str__(self):
        return f"{self.filename}:{self.lineno}"


@dataclass(eq=False)
class Block:
    args: list = field(default_factory=list)
    ops: list = field(default_factory=list)

    @property
    def terminator(self):
        return self.ops[-1] if self.ops and self.ops[-1].name == "yield" else None


@dataclass(eq=False)
class Op:
    name: str
    operands: list
    attrs: dict
    results: list
    regions: list = field(default_factory=list)
    loc: Loc | None = None

    @property
    def result(self):
        assert len(self.results) == 1, self.name
        return self.results[0]


@dataclass(eq=False)
class Param:
    name: str
    kind: str          # "tensor" | "scalar"
    value: Value


@dataclass(eq=False)
class Function:
    name: str
    params: list
    body: Block
    constexprs: dict
    loc: Loc | None = None


class TypeRuleError(Exception):
    """An op's operands break its typing rule (raised from ``infer_types``)."""


def broadcast_shapes(a, b):
    if a == b:
        return a
    if len(a) != len(b):
        if not a:
            return b
        if not b:
            return a
        raise TypeRuleError(f"shapes {a} and {b} have different ranks; use x[:, None] / x[None, :] to align")
    out = []
    for x, y in zip(a, b):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise TypeRuleError(f"shapes {a} and {b} cannot broadcast")
    return tuple(out)




def infer_types(op: Op) -> list:
    """Result types of ``op`` from its operands and attributes. The one place typing rules live."""
    n, a, at = op.name, op.operands, op.attrs
    if n not in IR_OPS:
        raise TypeRuleError(f"unknown op {n}")
    t = lambda shape, dt: TileType(tuple(shape), dt)
    if n == "const":
        return [t((), at["dtype"])]
    if n in ("program_id", "num_programs"):
        return [t((), D.int32)]
    if n == "dim":
        if not isinstance(a[0].type, TensorType) or not 0 <= at["axis"] < a[0].type.rank:
            raise TypeRuleError(f"dim {at['axis']} of {a[0].type}")
        return [t((), D.int32)]
    if n == "arange":
        return [t((at["n"],), D.int32)]
    if n == "full":
        if a[0].type.shape != ():
            raise TypeRuleError("full takes a scalar fill value")
        return [t(at["shape"], at["dtype"])]
    if n == "load":
        tensor, offs = a[0], a[1:1 + tensor_rank(a[0])]
        _check_offsets(tensor, offs, at["shape"])
        return [t(at["shape"], tensor.type.dtype)]
    if n in ("store", "atomic_rmw"):
        if n == "atomic_rmw" and at.get("kind") not in ATOMIC_RMW:
            raise TypeRuleError(f"unknown atomic kind {at.get('kind')!r}")
        tensor, rank = a[0], tensor_rank(a[0])
        offs, value = a[1:1 + rank], a[1 + rank]
        _check_offsets(tensor, offs, value.type.shape)
        if value.type.dtype is not tensor.type.dtype:
            raise TypeRuleError(f"stored value {value.type} does not match {tensor.type}")
        return []
    if n == "unary":
        if at.get("op") not in UNARY:
            raise TypeRuleError(f"unknown unary op {at.get('op')!r}")
        if at["op"] in FLOAT_ONLY_UNARY and not a[0].dtype.is_float:
            raise TypeRuleError(f"{at['op']} needs a float operand, got {a[0].type}")
        return [a[0].type]
    if n in ("binary", "cmp"):
        if at.get("op") not in (BINARY if n == "binary" else COMPARE):
            raise TypeRuleError(f"unknown {n} op {at.get('op')!r}")
        x, y = a
        if x.dtype is not y.dtype:
            raise TypeRuleError(f"operands of {at['op']} have different dtypes {x.dtype} and {y.dtype}")
        shape = broadcast_shapes(x.shape, y.shape)
        return [t(shape, D.bool_ if n == "cmp" else x.dtype)]
    if n == "where":
        c, x, y = a
        if not c.dtype.is_bool or x.dtype is not y.dtype:
            raise TypeRuleError(f"where({c.type}, {x.type}, {y.type})")
        return [t(broadcast_shapes(broadcast_shapes(c.shape, x.shape), y.shape), x.dtype)]
    if n == "cast":
        return [t(a[0].shape, at["dtype"])]
    if n == "broadcast":
        if broadcast_shapes(a[0].shape, tuple(at["shape"])) != tuple(at["shape"]):
            raise TypeRuleError(f"cannot broadcast {a[0].shape} to {at['shape']}")
        return [t(at["shape"], a[0].dtype)]
    if n == "expand_dims":
        s = list(a[0].shape)
        s.insert(at["axis"], 1)
        return [t(s, a[0].dtype)]
    if n == "reshape":
        if _numel(at["shape"]) != _numel(a[0].shape):
            raise TypeRuleError(f"cannot reshape {a[0].shape} to {at['shape']}")
        return [t(at["shape"], a[0].dtype)]
    if n == "slice":
        s, axis, start, size = list(a[0].shape), at["axis"], at["start"], at["size"]
        if not 0 <= axis < len(s) or start < 0 or size <= 0 or start + size > s[axis]:
            raise TypeRuleError(f"slice [{start}:{start + size}] of axis {axis} of {a[0].type}")
        s[axis] = size
        return [t(s, a[0].dtype)]
    if n == "trans":
        if len(a[0].shape) != 2:
            raise TypeRuleError(f".T needs a 2-D tile, got {a[0].type}")
        return [t(a[0].shape[::-1], a[0].dtype)]
    if n == "reduce":
        if at.get("kind") not in REDUCE:
            raise TypeRuleError(f"unknown reduction {at.get('kind')!r}")
        s = list(a[0].shape)
        del s[at["axis"]]
        return [t(s, a[0].dtype)]
    if n == "cumsum":
        return [a[0].type]
    if n == "scan":
        shapes = {v.shape for v in a}
        if len(shapes) != 1:
            raise TypeRuleError(f"scan operands have different shapes: {sorted(shapes)}")
        return [v.type for v in a]
    if n == "mma":
        x, y, acc = a
        if len(x.shape) != 2 or len(y.shape) != 2 or x.shape[1] != y.shape[0]:
            raise TypeRuleError(f"mma of {x.type} and {y.type}: need (M, K) @ (K, N)")
        if acc.shape != (x.shape[0], y.shape[1]):
            raise TypeRuleError(f"mma accumulator {acc.type} does not match ({x.shape[0]}, {y.shape[1]})")
        if x.dtype is not y.dtype:
            raise TypeRuleError(f"mma operands have different dtypes {x.dtype} and {y.dtype}")
        return [acc.type]
    if n == "for":
        return [v.type for v in a[3:]]
    if n == "if":
        return list(at["result_types"])
    if n == "yield":
        return []
    raise TypeRuleError(f"unknown op {n}")


def tensor_rank(v: Value) -> int:
    return v.type.rank


def _numel(shape):
    out = 1
    for s in shape:
        out *= s
    return out


def _check_offsets(tensor, offs, shape):
    if not isinstance(tensor.type, TensorType):
        raise TypeRuleError(f"{tensor.type} is not a tensor")
    if len(offs) != tensor.type.rank or len(shape) != tensor.type.rank:
        raise TypeRuleError(f"a {tensor.type.rank}-d tensor needs {tensor.type.rank} offsets and a "
                            f"{tensor.type.rank}-d tile shape, got {len(offs)} and {tuple(shape)}")
    for d, (o, s) in enumerate(zip(offs, shape)):
        if not o.dtype.is_int:
            raise TypeRuleError(f"offset {d} must be an integer, got {o.type}")
        if o.shape not in ((), (s,)):
            raise TypeRuleError(f"offset {d} is {o.type}: an offset is a scalar or a 1-D index tile of "
                                f"length {s}")


def offsets_and_mask(op: Op):
    """(tensor, offsets, value or other, mask or None) of a load/store/atomic_rmw."""
    rank = tensor_rank(op.operands[0])
    rest = op.operands[1 + rank:]
    value = None
    if op.name != "load":
        value, rest = rest[0], rest[1:]
    other = None
    if op.name == "load":
        other, rest = rest[0], rest[1:]
    mask = rest[0] if op.attrs.get("has_mask") else None
    return op.operands[0], op.operands[1:1 + rank], value if op.name != "load" else other, mask


# ---- walking and printing -----------------------------------------------------------------------

def walk(block: Block):
    """Every op in ``block`` and its nested regions, outer before inner."""
    for op in block.ops:
        yield op
        for r in op.regions:
            yield from walk(r)


class Namer:
    def __init__(self):
        self.names = {}

    def __call__(self, v):
        if v not in self.names:
            self.names[v] = f"%{len(self.names)}"
        return self.names[v]


def _fmt_attr(v):
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_fmt_attr(x) for x in v) + ")"
    return str(v) if not isinstance(v, float) else repr(v)


def format_function(fn: Function) -> str:
    name = Namer()
    lines = []
    params = ", ".join(f"{name(p.value)} {p.name}: {p.value.type}" for p in fn.params)
    cx = ", ".join(f"{k}={v!r}" for k, v in fn.constexprs.items())
    lines.append(f"func @{fn.name}({params})" + (f"  constexpr[{cx}]" if cx else "") + " {")

    def emit_block(block, indent):
        pad = "  " * indent
        for op in block.ops:
            res = ", ".join(name(r) for r in op.results)
            lhs = f"{res} = " if res else ""
            attrs = {k: v for k, v in op.attrs.items() if k != "result_types"}
            attr_s = (" {" + ", ".join(f"{k}={_fmt_attr(v)}" for k, v in attrs.items()) + "}") if attrs else ""
            ops = ", ".join(name(o) for o in op.operands)
            types = ", ".join(str(r.type) for r in op.results)
            loc = f"  # line {op.loc.lineno}" if op.loc else ""
            lines.append(f"{pad}{lhs}{op.name}({ops}){attr_s}{' : ' + types if types else ''}{loc}")
            for i, region in enumerate(op.regions):
                args = ", ".join(f"{name(a)}: {a.type}" for a in region.args)
                lines.append(f"{pad}  ^region{i}({args}):")
                emit_block(region, indent + 2)

    emit_block(fn.body, 1)
    lines.append("}")
    return "\n".join(lines)
