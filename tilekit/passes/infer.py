"""Shape/dtype inference: re-derive every result type from its operands, in order.

Construction already uses the same rules; this pass exists so a rewritten function (after folding or a
future transform) gets consistent types again without trusting what was recorded.
"""
from ..ir import infer_types


def infer_shapes(fn):
    def visit(block):
        for op in block.ops:
            for r in op.regions:
                visit(r)
            for res, t in zip(op.results, infer_types(op)):
                res.type = t
    visit(fn.body)
    return fn
