"""Small, separate passes over a ``Function``: verify, infer (re-derive types), fold, dce.

``run_pipeline`` is what every backend lowers from: the kernel after folding and dead-code removal,
verified before and after.
"""
from .verify import verify
from .infer import infer_shapes
from .fold import fold_constants
from .dce import eliminate_dead_code


def run_pipeline(fn):
    verify(fn)
    infer_shapes(fn)
    fold_constants(fn)
    eliminate_dead_code(fn)
    verify(fn)
    return fn


__all__ = ["verify", "infer_shapes", "fold_constants", "eliminate_dead_code", "run_pipeline"]
