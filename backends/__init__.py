"""Backend registry. A backend turns a verified ``ir.Function`` into something that runs.

Interface (one per backend module):
  ``available() -> (bool, reason)``
  ``build(kernel, fn, spec) -> CompiledKernel``  (``.source``, ``.launch(runtime_args, grid)``)
  ``aot(kernel, fn, spec, target) -> Artifact``  (backends that compile for GPUs)
"""
from __future__ import annotations

import importlib

from ..errors import BackendUnavailable

BACKENDS = ("reference", "triton", "opencl", "cuda", "hip")
_modules = {}


def get_backend(name):
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    mod = _modules.get(name)
    if mod is None:
        mod = importlib.import_module(f"{__name__}.{name}")
        _modules[name] = mod
    return mod


def availability():
    """{backend: (available, reason)}."""
    out = {}
    for name in BACKENDS:
        try:
            out[name] = get_backend(name).available()
        except Exception as e:  # an import failure is a reason, not a crash
            out[name] = (False, f"{type(e).__name__}: {e}")
    return out


def select_backend(requested, device):
    """The backend for a launch: ``requested`` if given, else the best one for the tensors' device."""
    if requested is not None:
        mod = get_backend(requested)
        ok, why = mod.available()
        if not ok:
            raise BackendUnavailable(f"backend {requested!r} is not available here: {why}")
        return requested
    if device is not None and device.type == "cuda":
        ok, why = get_backend("triton").available()
        if ok:
            return "triton"
        raise BackendUnavailable(f"no backend can run on {device}: triton: {why}")
    return "reference"


TARGETS = {
    "sm_80": ("triton", "cuda", 80, 32),
    "sm_90": ("triton", "cuda", 90, 32),
    "sm_90a": ("cuda", "cuda", 90, 32),  # CUDA C++ through NVRTC (arch-specific sm_90a); backend="triton" works too
    "gfx90a": ("triton", "hip", "gfx90a", 64),
    "gfx942": ("triton", "hip", "gfx942", 64),
    "opencl-cpu": ("opencl", "opencl", "cpu", 0),  # OpenCL C built by the OpenCL device (PoCL on the CPU)
}
# Which targets each C-style backend compiles for (kernel.compile(target, ..., backend=name)).
C_TARGETS = {"cuda": ("sm_80", "sm_90", "sm_90a"), "hip": ("gfx90a",), "opencl": ("opencl-cpu",)}


def aot_compile(kernel, fn, spec, target, backend=None):
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    name = backend or TARGETS[target][0]
    return get_backend(name).aot(kernel, fn, spec, target)
