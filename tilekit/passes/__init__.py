"""Small, separate passes over a ``Function``: verify, infer (re-derive types), fold, dce, and the optional
``bounds`` (``check_bounds=True``: device-side checks of gathered indices).

``run_pipeline`` is what every backend lowers from: the kernel after folding and dead-code removal,
verified before and after.
"""
from .verify import verify
from .infer import infer_shapes
from .fold import fold_constants
from .dce import eliminate_dead_code
from .bounds import insert_bounds_checks


def run_pipeline(fn, check_bounds=False):
    """The passes every backend lowers from. With ``check_bounds``, gathered accesses are also masked and
    reported through a hidden flag parameter (``fn.bounds_checks`` says which; see ``bounds.py``)."""
    verify(fn)
    infer_shapes(fn)
    fold_constants(fn)
    eliminate_dead_code(fn)
    fn.bounds_checks = insert_bounds_checks(fn) if check_bounds else None
    verify(fn)
    return fn


__all__ = ["verify", "infer_shapes", "fold_constants", "eliminate_dead_code", "insert_bounds_checks",
           "run_pipeline"]
