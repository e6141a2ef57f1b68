"""Every numeric tolerance tilekit uses, in one place.

Keys are torch dtypes. ``PROPERTY`` is what the property tests accept for one kernel against an
independent reference (PyTorch or float64): fp16/bf16 values are rounded at every op on a GPU,
so their bound scales with the number of roundings a kernel does, which stays small here.
``KERNELBENCH`` is KernelBench's own rule, used by ``tilekit bench``.
"""
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


def assert_close(actual, expected, dtype=None, table=PROPERTY, msg=""):
    """torch.testing.assert_close with the tolerance for ``dtype`` (default: actual's dtype)."""
    atol, rtol = for_dtype(dtype or actual.dtype, table)
    torch.testing.assert_close(actual.to(expected.dtype) if actual.dtype != expected.dtype else actual,
                               expected, atol=atol, rtol=rtol, equal_nan=False, msg=msg or None)
