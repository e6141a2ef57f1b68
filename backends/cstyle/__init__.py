"""The one C-style emitter behind the CUDA, HIP and OpenCL backends.

``generate(kernel, fn, dialect, options)`` turns a verified ``ir.Function`` into C source plus the facts a
launcher needs (block size, shared memory, which tensors are written, how to flatten arguments).
"""
from __future__ import annotations

import numpy as np
import torch

from ... import dtypes as D
from .. import naming
from .dialects import DIALECTS, Dialect  # noqa: F401
from .emitter import CEmitter, EmitError, emit  # noqa: F401


def kernel_symbol(name: str) -> str:
    """The C name of a kernel: its own namespace (``k_``), so it meets no builtin, prelude helper (``tk_``) or
    parameter, and bounded and ASCII (NVRTC rejects unicode; PoCL aborts on very long names)."""
    return naming.kernel_symbol(name)


class Generated:
    """C source for one specialization, with its launch facts."""

    def __init__(self, kernel_name, fn, dialect, num_warps=None, vec=None):
        self.dialect = DIALECTS[dialect] if isinstance(dialect, str) else dialect
        self.symbol = kernel_symbol(kernel_name)
        self.source, em = emit(fn, self.symbol, self.dialect, num_warps=num_warps, vec=vec)
        self.threads = em.T
        self.num_warps = em.num_warps
        self.smem_bytes = em.smem_bytes
        self.matrix_ops = list(em.matrix_ops)
        self.features = set(em.features)
        self.written = {p.name for p in fn.params if p.value in em.written}
        self.plan = param_plan(fn)


def param_plan(fn):
    """[(kind, name, rank, dtype)] in the order the C kernel takes its parameters."""
    out = []
    for p in fn.params:
        if p.kind == "scalar":
            out.append(("scalar", p.name, 0, p.value.dtype))
        else:
            t = p.value.type
            out.append(("packed" if t.packed else "tensor", p.name, t.rank, t.dtype))
    return out


_SCALAR_NP = {"bool_": np.int32, "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
              "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "float16": np.float32,
              "bfloat16": np.float32, "float32": np.float32, "float64": np.float64}


def scalar_arg(value, dt: D.DType):
    """A Python scalar as the numpy scalar a C kernel parameter of ``dt`` takes."""
    if dt.is_bool:
        return np.int32(1 if value else 0)
    return _SCALAR_NP[dt.name](value)


def flatten_args(plan, args, pointer):
    """The C kernel's argument list. ``pointer(name, tensor)`` makes the pointer argument of a tensor
    (a buffer, a device array, an address); shapes and strides follow it as int32, in elements (word
    strides for packed tensors)."""
    out = []
    for kind, name, rank, dt in plan:
        a = args[name]
        if kind == "scalar":
            out.append(scalar_arg(a, dt))
            continue
        if kind == "packed":
            out.append(pointer(name, a.words))
            out += [np.int32(s) for s in a.shape]
            out += [np.int32(s) for s in a.words.stride()[:-1]]
            continue
        if not isinstance(a, torch.Tensor):
            raise TypeError(f"argument '{name}' must be a torch.Tensor")
        out.append(pointer(name, a))
        out += [np.int32(s) for s in a.shape]
        out += [np.int32(s) for s in a.stride()]
    return out


def storage_view(t: torch.Tensor) -> torch.Tensor:
    """A flat tensor over the memory ``t`` spans (element 0 to its last element) in a dtype numpy and
    CuPy know, sharing ``t``'s memory. Kernels index it with ``t``'s own strides."""
    extent = 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride())) if t.numel() else 0
    flat = torch.as_strided(t, (extent,), (1,), t.storage_offset())
    if t.dtype == torch.bfloat16:
        flat = flat.view(torch.int16)
    elif t.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    return flat
