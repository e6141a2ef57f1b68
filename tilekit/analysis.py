"""Small facts about IR values that emitters use to drop needless work."""
from __future__ import annotations

from .ir import Function, walk
from .optable import BINARY


def loop_owners(fn: Function) -> dict:
    """Map each ``for`` body's induction variable to its ``for`` op."""
    out = {}
    for op in walk(fn.body):
        if op.name == "for":
            out[op.regions[0].args[0]] = op
    return out


def is_nonnegative(v, owners: dict, depth=0) -> bool:
    """True when ``v`` is provably >= 0 (so an edge mask needs no lower-bound check)."""
    if depth > 24:
        return False
    op = v.owner
    if op is None:
        loop = owners.get(v)
        if loop is not None:
            start, _, step = loop.operands[:3]
            return is_nonnegative(start, owners, depth + 1) and is_nonnegative(step, owners, depth + 1)
        return False
    n = op.name
    if n == "const":
        return op.attrs["value"] >= 0
    if n in ("program_id", "num_programs", "dim", "arange"):
        return True
    if n == "binary" and BINARY[op.attrs["op"]].nonneg:
        a, b = op.operands
        if op.attrs["op"] == "maximum":
            return is_nonnegative(a, owners, depth + 1) or is_nonnegative(b, owners, depth + 1)
        return is_nonnegative(a, owners, depth + 1) and is_nonnegative(b, owners, depth + 1)
    if n in ("cast", "broadcast", "expand_dims"):
        return op.operands[0].dtype.is_int and is_nonnegative(op.operands[0], owners, depth + 1)
    return False
