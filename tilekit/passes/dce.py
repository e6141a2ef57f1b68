"""Dead-code elimination: drop pure ops whose results nobody uses."""
_SIDE_EFFECTS = {"store", "atomic_add", "yield"}


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
                if op.name in _SIDE_EFFECTS or any(r in used for r in op.results) or \
                        (op.name in ("for", "if") and _has_effects(op)):
                    keep.append(op)
                else:
                    changed = True
            block.ops = keep
        sweep(fn.body)
    return fn


def _has_effects(op):
    for r in op.regions:
        for o in r.ops:
            if o.name in ("store", "atomic_add") or (o.regions and _has_effects(o)):
                return True
    return False
