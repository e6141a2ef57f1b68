"""Output poisoning, so a kernel that writes nothing (or only part of its output) fails.

Two layers, both active only inside the candidate's own subprocess:

1. **Python allocations.** ``torch.empty``, ``torch.empty_like``, ``torch.empty_strided`` and
   ``Tensor.new_empty`` are wrapped before the candidate (and tilekit's ops) are imported: floating
   and complex results are filled with NaN, integer ones with their dtype's largest value. An output
   buffer that a kernel never writes therefore holds NaN, and the comparison fails it ("a NaN
   anywhere fails"). Tensors on the meta device and fake tensors are left alone.
2. **The CUDA caching allocator.** Allocations made in C++ (``at::empty``) bypass the Python
   wrappers, so before every trial a block of device memory is filled with 0xFF bytes (NaN in every
   float format, -1 in integer ones) and released back to the caching allocator, which hands those
   dirty bytes to the next allocations. On the CPU, fresh large allocations come zeroed from the
   OS, so layer 1 is what catches unwritten outputs there.
"""
from __future__ import annotations

import contextlib
import functools

import torch

_PATCHED_FUNCTIONS = ("empty", "empty_like", "empty_strided")
# Off while timing: filling costs bandwidth that the candidate's own kernel must not be charged.
_active = True


def _fill_poison(tensor):
    if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta" or tensor.numel() == 0:
        return tensor
    if type(tensor).__name__ == "FakeTensor":
        return tensor
    with torch.no_grad():
        if tensor.is_floating_point() or tensor.is_complex():
            tensor.fill_(float("nan"))
        elif tensor.dtype != torch.bool:
            tensor.fill_(torch.iinfo(tensor.dtype).max)
    return tensor


def _poisoning(allocator):
    @functools.wraps(allocator)
    def allocate(*args, **kwargs):
        tensor = allocator(*args, **kwargs)
        return _fill_poison(tensor) if _active else tensor
    allocate.__tilekit_poison__ = True
    return allocate


def install() -> None:
    """Wrap the Python-level ``empty`` allocators. Idempotent; meant for a throwaway subprocess."""
    for name in _PATCHED_FUNCTIONS:
        original = getattr(torch, name)
        if not getattr(original, "__tilekit_poison__", False):
            setattr(torch, name, _poisoning(original))
    if not getattr(torch.Tensor.new_empty, "__tilekit_poison__", False):
        torch.Tensor.new_empty = _poisoning(torch.Tensor.new_empty)


def set_active(active: bool) -> None:
    """Turn filling on (correctness trials) or off (timing); the wrappers stay installed."""
    global _active
    _active = bool(active)


def is_installed() -> bool:
    return all(getattr(getattr(torch, n), "__tilekit_poison__", False) for n in _PATCHED_FUNCTIONS)


def dirty_cuda_allocator(device, nbytes: int) -> int:
    """Fill ``nbytes`` of fresh device memory with 0xFF and hand it back to the caching allocator.

    Capped at half the free memory. Returns the bytes poisoned (0 where CUDA is unavailable)."""
    if not (torch.cuda.is_available() and str(device).startswith("cuda")):
        return 0
    with contextlib.suppress(RuntimeError):       # mem_get_info can fail on exotic set-ups
        free, _total = torch.cuda.mem_get_info(device)
        nbytes = min(nbytes, free // 2)
    if nbytes <= 0:
        return 0
    block = torch.full((nbytes,), 0xFF, dtype=torch.uint8, device=device)
    del block                                       # back to the cache, still holding 0xFF
    return nbytes
