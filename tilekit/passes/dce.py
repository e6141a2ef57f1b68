"""Dead-code elimination: drop pure ops whose results nobody uses (traits from ``optable.IR_OPS``)."""
from ..optable import Trait, has


def _keeps_itself(op):
    """An op that must stay even when its results are unused: a write, a terminator, or a region op
    whose body writes."""
    if has(op.name, Trait.WRITES_MEMORY | Trait.TERMINATOR):
        return True
    return any(_keeps_itself(o) for r in op.regions for o in r.ops if o.name != "yield")


def eliminate_dead_code(fn):
    changed = True
    while changed:
        used = set()

        def mark(block):
            for op in block.ops:
                used.update(op.operands)
                for r in op.regions:
                    mark(r)
        mark(fn.body)
        changed = False

        def sweep(block):
            nonlocal changed
            keep = []
            for op in block.ops:
                for r in op.regions:
                    sweep(r)
                if _keeps_itself(op) or any(r in used for r in op.results):
                    keep.append(op)
                else:
                    changed = True
            block.ops = keep
        sweep(fn.body)
    return fn
