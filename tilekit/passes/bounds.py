"""``check_bounds``: device-side checks of gathered indices, for every backend, written in Tile IR.

The reference executor defines what is out of bounds (``reference._memory_index``): along a dimension
indexed by a scalar offset, a tile is edge-masked automatically (legal, never an error); along a dimension
indexed by a 1-D index tile (a gather/scatter), an element that the automatic masks of the scalar dimensions
and the user's ``mask=`` leave *on* and whose index is outside ``[0, T.shape[d])`` is a bug.

This pass makes each such load / store / atomic_rmw on a real backend

* **safe**: its mask gains "every gathered index in range", so the out-of-range element is never read
  or written (a bad index cannot reach a neighbouring tensor), and
* **reported**: per (op, gathered dimension) it keeps two int32 words of a hidden flag tensor (a new
  last kernel parameter): ``atomic_add`` of the number of offending elements, and a masked store of one
  offending index (any writer's value is a correct example, so racing programs cannot tear it).

Only ops of the op table are used (``dim``, ``arange``, ``cmp``, ``binary``, ``unary``, ``cast``,
``reshape``, ``broadcast``, ``full``, ``store``, ``atomic_rmw``), so every emitter lowers it unchanged.
The launch layer (``kernel.py``) allocates the zeroed flag on the arguments' device, reads it back once
after the launch and raises ``OutOfBoundsError`` through ``BoundsChecks.error``.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import dtypes as D
from ..analysis import is_nonnegative, loop_owners
from ..errors import OutOfBoundsError
from ..ir import Loc, Op, Param, TensorType, Value, infer_types, offsets_and_mask, walk
from ..optable import MEMORY_OPS

WORDS_PER_CHECK = 2          # [offending element count, one offending index value]
INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
_WHAT = {"load": "tk.load reads", "store": "tk.store writes"}


@dataclass(frozen=True)
class BoundsCheck:
    """One gathered dimension of one memory op."""
    op: str            # "tk.load", "tk.store", "tk.atomic_add"
    tensor: str        # the parameter's name
    dim: int
    rank: int
    index_bits: int    # of the index tile (a 64-bit index is reported saturated to int32)
    loc: Loc | None

    @property
    def verb(self):
        return "reads" if self.op == "tk.load" else "writes"


@dataclass(frozen=True)
class BoundsChecks:
    """What ``insert_bounds_checks`` added: the flag parameter's name and the checks, one per two words."""
    param: str
    checks: tuple

    @property
    def words(self):
        return WORDS_PER_CHECK * len(self.checks)

    def error(self, flags, shapes, backend=None):
        """The ``OutOfBoundsError`` for the flag words read back after a launch (None when all are 0): the
        first check in program order that saw an offending element. ``shapes``: tensor name -> shape."""
        for k, c in enumerate(self.checks):
            count, value = int(flags[WORDS_PER_CHECK * k]), int(flags[WORDS_PER_CHECK * k + 1])
            if count == 0:
                continue
            shape = list(shapes[c.tensor])
            index = str(value)
            if c.index_bits == 64 and value in (INT32_MIN, INT32_MAX):
                index = f"<= {value}" if value < 0 else f">= {value}"
            coord = ", ".join(index if d == c.dim else ":" for d in range(c.rank))
            loc = f"{c.loc}: " if c.loc else ""
            line = f"\n    {c.loc.line.strip()}" if c.loc and c.loc.line else ""
            on = f" on the {backend} backend" if backend else ""
            many = f"{count} element{'s' if count != 1 else ''} out of range over all programs"
            msg = (f"{loc}{c.op} {c.verb} {c.tensor}[{coord}] outside its shape {shape}: dimension {c.dim} is "
                   f"indexed by a tile, which is not masked automatically; pass mask= to cover out-of-range "
                   f"indices ({many}{on}, check_bounds=True; the access was suppressed){line}")
            return OutOfBoundsError(msg, op=c.op, tensor=c.tensor, dim=c.dim, index=value, count=count,
                                    filename=c.loc.filename if c.loc else None,
                                    lineno=c.loc.lineno if c.loc else None, backend=backend)
        return None


class _Emitter:
    """Builds ops (types from ``ir.infer_types``, as the front end's builder does) into a list."""

    def __init__(self, loc):
        self.loc = loc
        self.ops = []

    def __call__(self, name, *operands, **attrs):
        op = Op(name, list(operands), attrs, [], [], self.loc)
        op.results = [Value(t) for t in infer_types(op)]
        for r in op.results:
            r.owner = op
        self.ops.append(op)
        return op.results[0] if op.results else None

    def const(self, value, dt):
        return self("const", value=value, dtype=dt)

    def cast(self, v, dt):
        return v if v.dtype is dt else self("cast", v, dtype=dt)

    def both(self, a, b):
        """``a & b`` of bool tiles, either of which may be None (no condition)."""
        if a is None or b is None:
            return a if b is None else b
        return self("binary", a, b, op="and")

    def along(self, v, d, rank):
        """A 1-D tile laid along dimension ``d`` of a rank-``rank`` tile (shape 1 elsewhere)."""
        if rank == 1:
            return v
        return self("reshape", v, shape=tuple(v.shape[0] if e == d else 1 for e in range(rank)))

    def flat(self, v, shape):
        """``v`` broadcast to ``shape`` and flattened to 1-D."""
        n = 1
        for s in shape:
            n *= s
        if tuple(v.shape) != tuple(shape):
            v = self("broadcast", v, shape=tuple(shape))
        return v if len(shape) == 1 else self("reshape", v, shape=(n,))


def _gathered(op):
    if op.name not in MEMORY_OPS:
        return False
    _, offs, _, _ = offsets_and_mask(op)
    return any(o.shape != () for o in offs)


def _flag_name(fn):
    taken = {p.name for p in fn.params}
    name, k = "tk_bounds_flags", 0
    while name in taken:
        k += 1
        name = f"tk_bounds_flags{k}"
    return name


def insert_bounds_checks(fn):
    """Rewrite every gathered access of ``fn`` as described above. Returns the ``BoundsChecks`` (also kept
    as ``fn.bounds_checks``), or None when the kernel has no gathered access (then nothing changes)."""
    targets = set()
    for op in walk(fn.body):
        if _gathered(op):
            targets.add(op)
    if not targets:
        fn.bounds_checks = None
        return None
    name = _flag_name(fn)
    flag = Value(TensorType(D.int32, 1), name=name)
    fn.params.append(Param(name, "tensor", flag))
    owners = loop_owners(fn)
    checks = []

    def visit(block):
        new = []
        for op in block.ops:
            for r in op.regions:
                visit(r)
            if op in targets:
                new += _guard(op, flag, checks, owners)
            new.append(op)
        block.ops = new

    visit(fn.body)
    fn.bounds_checks = BoundsChecks(name, tuple(checks))
    return fn.bounds_checks


def _guard(op, flag, checks, owners):
    """The check ops for one gathered access (returned, to go before it); ``op`` gets the new mask."""
    tensor, offs, value, mask = offsets_and_mask(op)
    shape = tuple(op.attrs["shape"]) if op.name == "load" else tuple(value.shape)
    rank = len(shape)
    e = _Emitter(op.loc)

    # The elements the reference checks: inside the automatic edge masks of the scalar dimensions, and
    # inside the user's mask (reference._memory_index, ``mask``).
    covered = mask
    for d, o in enumerate(offs):
        if o.shape != ():
            continue
        c = e("binary", o, e.cast(e("arange", n=shape[d]), o.dtype), op="add")
        ok = e("cmp", c, e.cast(e("dim", tensor, axis=d), o.dtype), op="lt")
        if not is_nonnegative(o, owners):
            ok = e.both(ok, e("cmp", c, e.const(0, o.dtype), op="ge"))
        covered = e.both(covered, e.along(ok, d, rank))

    # Per gathered dimension: out of [0, shape[d]) -- in int64 for 64-bit indices, else in int32 (an
    # unsigned 32-bit index >= 2**31 turns negative there, and is out of range either way). The index tile
    # is broadcast to the tile shape once (one cross-thread move on the C backends); the rest is elementwise.
    n = 1
    for s in shape:
        n *= s
    in_range = None
    for d, o in enumerate(offs):
        if o.shape == ():
            continue
        wide = D.int64 if o.dtype.bits == 64 else D.int32
        idx = e.along(e.cast(o, wide), d, rank)
        if tuple(idx.shape) != shape:
            idx = e("broadcast", idx, shape=shape)
        out = e("binary", e("cmp", idx, e.const(0, wide), op="lt"),
                e("cmp", idx, e.cast(e("dim", tensor, axis=d), wide), op="ge"), op="or")
        in_range = e.both(in_range, e("unary", out, op="not"))

        # Report: the count of offending elements, and one offending index (saturated to int32).
        slot = WORDS_PER_CHECK * len(checks)
        bad = e.flat(e.both(covered, out), shape)
        e("atomic_rmw", flag, e("full", e.const(slot, D.int32), shape=(n,), dtype=D.int32),
          e("cast", bad, dtype=D.int32), bad, kind="add", has_mask=True)
        if wide is D.int64:
            idx = e("binary", e("binary", idx, e.const(INT32_MIN, D.int64), op="maximum"),
                    e.const(INT32_MAX, D.int64), op="minimum")
        e("store", flag, e("full", e.const(slot + 1, D.int32), shape=(n,), dtype=D.int32),
          e.flat(e.cast(idx, D.int32), shape), bad, has_mask=True)
        what = "tk.load" if op.name == "load" else "tk.store" if op.name == "store" else f"tk.atomic_{op.attrs['kind']}"
        checks.append(BoundsCheck(what, tensor.name, d, rank, o.dtype.bits, op.loc))

    # Suppress: the access keeps only the elements whose gathered indices are all in range.
    new_mask = e.both(mask, in_range)
    if tuple(new_mask.shape) != shape:
        new_mask = e("broadcast", new_mask, shape=shape)
    if mask is not None:
        op.operands[-1] = new_mask
    else:
        op.operands.append(new_mask)
        op.attrs["has_mask"] = True
    return e.ops


__all__ = ["BoundsCheck", "BoundsChecks", "insert_bounds_checks", "WORDS_PER_CHECK"]
