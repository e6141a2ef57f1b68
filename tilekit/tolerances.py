"""Every numeric tolerance tilekit uses, in one place.

Keys are torch dtypes. ``PROPERTY`` is what the property tests accept for one kernel against an
independent reference (PyTorch or float64): fp16/bf16 values are rounded at every op on a GPU,
so their bound scales with the number of roundings a kernel does, which stays small here.
``KERNELBENCH`` is KernelBench's own rule, used by ``tilekit bench``.

An op family whose kernels round more often (a long reduction, a backward pass) writes its own tables in
``ops/<family>/tolerances.py``, as module-level ``{dtype: (atol, rtol)}`` dicts; ``op_table`` reads them
from there, so every tolerance is still found from this file.
"""
import importlib

import torch

# dtype -> (atol, rtol)
PROPERTY = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (2e-2, 1e-2),
    torch.bfloat16: (1e-1, 4e-2),
}

KERNELBENCH = {
    torch.float64: (1e-4, 1e-4),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (1e-2, 1e-2),
}


def for_dtype(dtype, table=PROPERTY):
    """(atol, rtol) for ``dtype``; integer dtypes compare exactly."""
    if not (dtype.is_floating_point if isinstance(dtype, torch.dtype) else False):
        return (0.0, 0.0)
    try:
        return table[dtype]
    except KeyError:
        raise KeyError(f"no tolerance written down for {dtype}; add it to tilekit/tolerances.py") from None


def op_table(family, name="PROPERTY"):
    """The table ``name`` of op family ``family`` (``ops/<family>/tolerances.py``), e.g.
    ``op_table("attention", "BACKWARD")``; a family without its own table uses this module's."""
    try:
        module = importlib.import_module(f"tilekit.ops.{family}.tolerances")
    except ModuleNotFoundError as exc:
        if exc.name not in (f"tilekit.ops.{family}.tolerances", f"tilekit.ops.{family}"):
            raise
        module = None
    table = getattr(module, name, None) if module is not None else None
    if table is None:
        table = globals().get(name)
    if not isinstance(table, dict):
        raise KeyError(f"no tolerance table {name!r} for op family {family!r}: add it to "
                       f"ops/{family}/tolerances.py")
    return table


# u: the largest relative error of one rounding to the format
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-24, torch.float64: 2.0**-53}


def sequential_rounding_bound(dtype, count, abs_sum):
    """Worst-case error of ``count`` additions each rounded to ``dtype`` (e.g. atomic adds into one element),
    when no partial sum exceeds ``abs_sum`` in magnitude: ``count * u * abs_sum``. The PROPERTY table covers
    a few roundings; outputs that accumulate many add this on top."""
    return count * UNIT_ROUNDOFF[dtype] * abs_sum


def assert_close(actual, expected, dtype=None, table=PROPERTY, msg="", extra_atol=None):
    """torch.testing.assert_close with the tolerance for ``dtype`` (default: actual's dtype).

    ``extra_atol`` (a tensor broadcastable to ``expected``) widens the absolute tolerance per element, for
    outputs whose rounding error is bounded by a computation such as ``sequential_rounding_bound``."""
    dtype = dtype or actual.dtype
    atol, rtol = for_dtype(dtype, table)
    actual = actual.to(expected.dtype) if actual.dtype != expected.dtype else actual
    if extra_atol is None:
        torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, equal_nan=False, msg=msg or None)
        return
    assert actual.shape == expected.shape, f"{msg}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = (actual.double() - expected.double()).abs()
    allowed = atol + rtol * expected.double().abs() + extra_atol
    bad = ~(err <= allowed)  # NaN counts as bad
    if bad.any():
        i = tuple(int(x) for x in bad.nonzero()[0])
        raise AssertionError(f"{msg}: {int(bad.sum())} of {bad.numel()} elements differ; first at {list(i)}: "
                             f"actual {actual[i].item()}, expected {expected[i].item()}, allowed error "
                             f"{allowed[i].item():.3g} ({dtype})")
