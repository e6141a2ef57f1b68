"""Backend registry: one ``Backend`` record per backend, and everything derived from it.

A backend turns a verified ``ir.Function`` into something that runs. Its module (``tilekit.backends.NAME``)
provides ``available() -> (bool, reason)``, ``build(kernel, fn, spec) -> CompiledKernel`` (``.source``,
``.launch(runtime_args, grid)``) and ``aot(kernel, fn, spec, target) -> Artifact``. The record below says
the rest: which GPU targets it compiles for (and which of them it is the default for), which tensors'
devices it launches on, and for which device it is the default. ``TARGETS``, ``C_TARGETS``, the launch's
and the ops' backend choice, the CLI's choices and the tests' backend lists are all read from it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import BackendUnavailable


class GpuArch(NamedTuple):
    """A compile target: its name, the GPU platform ("cuda", "hip", "opencl"), the arch and the warp size."""
    name: str
    platform: str
    arch: object
    warp: int


SM_80 = GpuArch("sm_80", "cuda", 80, 32)
SM_90 = GpuArch("sm_90", "cuda", 90, 32)
SM_90A = GpuArch("sm_90a", "cuda", 90, 32)  # arch-specific sm_90a (wgmma); Triton's sm_90 already uses it
GFX90A = GpuArch("gfx90a", "hip", "gfx90a", 64)
GFX942 = GpuArch("gfx942", "hip", "gfx942", 64)
OPENCL_CPU = GpuArch("opencl-cpu", "opencl", "cpu", 0)  # built by the OpenCL device (PoCL on the CPU)


@dataclass(frozen=True)
class Backend:
    name: str
    emits: str
    targets: tuple = ()              # GpuArch it compiles for (kernel.compile(target, ..., backend=name))
    default_targets: tuple = ()      # the target names for which it is the default backend
    launches_on: tuple = ()          # torch device types it launches on where a GPU is present
    launches_on_without_gpu: tuple = ()  # ... and where none is (the Triton interpreter takes CPU tensors)
    default_for: tuple = ()          # device types whose launches default to it
    cstyle: bool = False             # built by the shared C-style emitter
    # the tunable launch options its kernels honour; the tuner searches no other (num_stages changes
    # nothing outside Triton). num_warps stays for the reference: tunables' validity rules read it.
    launch_options: tuple = ("num_warps",)
    # whether its lowering uses TensorType.shape_of / strides_of (an aliased variant is compiled only then)
    shares_layouts: bool = False

    @property
    def module(self):
        return get_backend(self.name)

    def available(self):
        """(ok, reason): the backend module's own probe (an import failure is a reason, not a crash)."""
        try:
            return self.module.available()
        except Exception as e:
            return False, f"{type(e).__name__}: {e}"

    @property
    def target_names(self):
        return tuple(t.name for t in self.targets)

    def device_types(self):
        """The torch device types this backend launches on here."""
        from .toolchain import gpu_present
        return self.launches_on if gpu_present() else self.launches_on_without_gpu


REGISTRY = (
    Backend("reference", "nothing: runs the IR with numpy (the semantics, bounds-checked)",
            launches_on=("cpu",), launches_on_without_gpu=("cpu",), default_for=("cpu",)),
    Backend("triton", "Triton Python", targets=(SM_80, SM_90, SM_90A, GFX90A, GFX942),
            default_targets=("sm_80", "sm_90", "gfx90a", "gfx942"),
            launches_on=("cuda",), launches_on_without_gpu=("cpu",), default_for=("cuda",),
            launch_options=("num_warps", "num_stages"), shares_layouts=True),
    Backend("opencl", "OpenCL C", targets=(OPENCL_CPU,), default_targets=("opencl-cpu",),
            launches_on=("cpu",), launches_on_without_gpu=("cpu",), cstyle=True),
    Backend("cuda", "CUDA C++ (NVRTC)", targets=(SM_80, SM_90, SM_90A), default_targets=("sm_90a",),
            launches_on=("cuda",), cstyle=True),
    Backend("hip", "HIP C++ (hipcc)", targets=(GFX90A,), launches_on=("cuda",), cstyle=True),
)
_BY_NAME = {b.name: b for b in REGISTRY}
BACKENDS = tuple(_BY_NAME)


class Target(NamedTuple):
    backend: str     # the default backend for this target
    platform: str
    arch: object
    warp: int


def _targets():
    out = {}
    for b in REGISTRY:
        for t in b.targets:
            if t.name in b.default_targets:
                assert t.name not in out, f"two default backends for {t.name}"
                out[t.name] = Target(b.name, t.platform, t.arch, t.warp)
    missing = {t.name for b in REGISTRY for t in b.targets} - set(out)
    assert not missing, f"targets with no default backend: {missing}"
    return out


TARGETS = _targets()
# Which targets each C-style backend compiles for.
C_TARGETS = {b.name: b.target_names for b in REGISTRY if b.cstyle}
# Backends that compile for GPU targets (the CLI's `compile --backend` choices).
COMPILING_BACKENDS = tuple(b.name for b in REGISTRY if b.targets)

_modules = {}


def record(name) -> Backend:
    """The registration record of backend ``name``."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return _BY_NAME[name]


def get_backend(name):
    """The module of backend ``name``."""
    record(name)
    mod = _modules.get(name)
    if mod is None:
        mod = importlib.import_module(f"{__name__}.{name}")
        _modules[name] = mod
    return mod


def availability():
    """{backend: (available, reason)}."""
    return {b.name: b.available() for b in REGISTRY}


def runnable_backends(device_type="cpu"):
    """The backends that launch kernels on ``device_type`` tensors here and are available."""
    def launches(b):
        why = getattr(b.module, "launch_unavailable_reason", lambda: None)() if b.available()[0] else "unavailable"
        return why is None
    return tuple(b.name for b in REGISTRY if device_type in b.device_types() and launches(b))


def default_backend(device):
    """The backend a launch with no ``backend=`` uses, for tensors on ``device`` (None: no tensors)."""
    kind = "cpu" if device is None or device.type in ("cpu", "meta") else device.type
    for b in REGISTRY:
        if kind in b.default_for:
            return b.name
    raise BackendUnavailable(f"no tilekit backend launches on {device} tensors")


# The environment variable that overrides the backend of every op call (tilekit.ops.dispatch reads it per call).
OPS_BACKEND_ENV = "TILEKIT_OPS_BACKEND"


# Why CPU tensors default to the reference backend (measured; docs/tune.md "Which backend runs CPU ops").
CPU_DEFAULT_WHY = ("measured (docs/tune.md): opencl is 3-4x faster warm on matmul but its first build costs "
                   f"15-25 s; opt in with {OPS_BACKEND_ENV}=opencl")


def cpu_default_line():
    """One line naming the backend ops use on CPU tensors, and why (`tilekit info`, the bench header)."""
    import os
    import torch
    default = default_backend(torch.device('cpu'))
    chosen = os.environ.get(OPS_BACKEND_ENV)
    if chosen and chosen != default:
        return f"ops on CPU tensors use {chosen} (${OPS_BACKEND_ENV}; the default is {default}: {CPU_DEFAULT_WHY})"
    return f"ops on CPU tensors use {default} ({CPU_DEFAULT_WHY})"


_DEVICE_WORDS = {"cpu": "CPU", "cuda": "GPU (cuda)"}  # meta tensors make sources and AOT compiles, never launch


def check_launch_device(name, device, here=True, hint=""):
    """Raise ``ValueError`` if backend ``name`` cannot launch on ``device`` tensors: on this machine
    (``here``), or on any machine (``here=False``: a GPU backend is a valid choice for GPU tensors even
    where no GPU is present; the launch then says it is unavailable)."""
    if device is None:
        return
    b = record(name)
    kinds = b.device_types() if here else tuple(dict.fromkeys(b.launches_on + b.launches_on_without_gpu))
    if device.type not in kinds:
        where = " or ".join(_DEVICE_WORDS.get(k, k) for k in kinds) or "no"
        raise ValueError(f"the {name} backend runs on {where} tensors only{' here' if here else ''}, but the "
                         f"inputs are on {device}" + (f"; {hint}" if hint else ""))


def select_backend(requested, device):
    """The backend for a launch: ``requested`` if given, else the default for the tensors' device."""
    name = requested if requested is not None else default_backend(device)
    ok, why = record(name).available()
    if not ok:
        if requested is not None:
            raise BackendUnavailable(f"backend {requested!r} is not available here: {why}")
        raise BackendUnavailable(f"no backend can run on {device}: {name}: {why}")
    return name


def aot_compile(kernel, fn, spec, target, backend=None):
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    name = backend or TARGETS[target].backend
    return get_backend(name).aot(kernel, fn, spec, target)
