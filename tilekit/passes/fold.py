"""Constant folding of scalar ops whose operands are all constants (constexpr arithmetic that reached
the IR, ``if`` on a constant condition)."""
import numpy as np

from ..optable import Trait, has
from ..reference import _const as const_array, eval_binary, eval_cast, eval_unary


def _const(v):
    if v.owner is not None and v.owner.name == "const":
        return v.owner.attrs["value"]
    return None


def fold_constants(fn):
    replace = {}

    def sub(v):
        while v in replace:
            v = replace[v]
        return v

    def visit(block):
        new_ops = []
        for op in block.ops:
            op.operands = [sub(v) for v in op.operands]
            for r in op.regions:
                visit(r)
            if has(op.name, Trait.FOLDABLE) and all(v.shape == () for v in op.operands) \
                    and all(_const(v) is not None for v in op.operands):
                vals = [const_array(_const(v), v.dtype) for v in op.operands]
                res = op.results[0]
                with np.errstate(all="ignore"):
                    if op.name == "unary":
                        out = eval_unary(op.attrs["op"], vals[0], res.dtype)
                    elif op.name == "cast":
                        out = eval_cast(vals[0], op.operands[0].dtype, res.dtype)
                    else:
                        out = eval_binary(op.attrs["op"], vals[0], vals[1], op.operands[0].dtype)
                out = np.asarray(out).item()
                # inf/nan results stay ops for the backend to compute
                if not (res.dtype.is_float and not np.isfinite(out)):
                    op.name, op.operands = "const", []
                    op.attrs = {"value": bool(out) if res.dtype.is_bool else out, "dtype": res.dtype}
            if op.name == "if" and _const(op.operands[0]) is not None:
                taken = op.regions[0 if _const(op.operands[0]) else 1]
                y = taken.ops[-1]
                new_ops.extend(taken.ops[:-1])
                for r, v in zip(op.results, y.operands):
                    replace[r] = sub(v)
                continue
            new_ops.append(op)
        block.ops = new_ops

    visit(fn.body)
    return fn
