"""The tuning protocol: what an op kernel declares so that one tuner, with no per-op code, can tune it.

Each op registers one ``TuneKernel`` per kernel (``matmul.main``, ``softmax.forward``, ``softmax.backward``)
with ``register``. The tuner, its worker processes, the runtime lookup and the CLI read only this record.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from dataclasses import dataclass, field
from typing import Callable

import torch

_REGISTRY: dict = {}
# Modules whose import registers op kernels; later op issues append theirs.
KERNEL_MODULES = ["tilekit.ops"]


def pow2_bucket(shape, flags=()):
    """The default bucket of a shape: every size rounded up to a power of two."""
    return tuple(1 if n <= 1 else 1 << (int(n) - 1).bit_length() for n in shape)


def log2_distance(a, b):
    """The default bucket distance: the sum of |log2 ratio| over the size dims."""
    return sum(abs(math.log2(max(x, 1)) - math.log2(max(y, 1))) for x, y in zip(a, b))


@dataclass(frozen=True)
class TuneKernel:
    """One tunable op kernel.

    ``make_inputs(shape, dtype, generator)`` returns the input tensors; ``make_output(inputs)`` the output
    to fill; ``launch_args(inputs, out, config)`` returns ``(grid, args, kwargs)`` for ``kernel[grid](*args,
    backend=..., **kwargs)``: the op launches through the same function, so what is tuned is what runs.
    ``reference(*inputs)`` is the correctness gate's oracle. ``default_config(shape, dtype, device)`` is
    trial 0. ``default_shapes`` maps "cpu" / "gpu" to the shapes ``tilekit tune`` tunes when none are given
    (size tuples, or ``--shapes`` strings where a default shape carries flags, e.g. ``"1,32,8,4096,4096,128,causal=1"``).

    A kernel that declares ``flags`` gets them, as ``flags={name: value-string}`` (only the flags given), in
    ``make_inputs``, ``launch_args``, ``reference`` and ``default_config`` too: a causal attention job must
    time, gate and start from the causal kernel. The tuner calls these through ``inputs_for`` and friends.
    """
    id: str
    kernel: object
    shape_names: tuple
    make_inputs: Callable
    make_output: Callable
    launch_args: Callable
    reference: Callable
    default_config: Callable
    default_shapes: dict
    flags: tuple = ()
    bucket_key: Callable = pow2_bucket
    bucket_distance: Callable = log2_distance
    # the tolerance table the gate compares with (tilekit.tolerances.PROPERTY unless said otherwise)
    tolerances: dict = field(default=None)
    # a flag's value when a job or a call does not give it, so a job and the op's lookup key the same entry
    flag_defaults: dict = field(default_factory=dict)
    # optional steps around every gated and timed launch, ``(inputs, out, config, backend[, flags=])``: what
    # the op does besides the kernel for this config (split-K zeroes an accumulator before and runs its
    # finish kernel after). A kernel with hooks is timed by the wall clock, hooks included.
    before_launch: Callable = None
    after_launch: Callable = None
    # ``shape_rule(shape, config[, flags=])``: why a config that passes the tunables' rule cannot serve this
    # shape (e.g. a GEMV whose program covers BM rows, at M > BM), or None; such trials are pruned, not failed
    shape_rule: Callable = None
    # maps a flags dict to the canonical one (e.g. a block format's fixed group), so equal jobs key equal entries
    normalize_flags: Callable = None

    def canonical_flags(self, flags):
        """``flags`` (pairs or a dict) with the defaults filled in, as sorted ``(name, str value)`` pairs."""
        given = dict(flags)
        unknown = [k for k in given if k not in self.flags]
        if unknown:
            raise ValueError(f"{self.id}: unknown flag(s) {', '.join(unknown)}; flags: {', '.join(self.flags) or 'none'}")
        full = {**{k: str(v) for k, v in self.flag_defaults.items()}, **{k: str(v) for k, v in given.items()}}
        if self.normalize_flags is not None:
            full = {k: str(v) for k, v in self.normalize_flags(full).items()}
        return tuple(sorted(full.items()))

    def _call(self, fn, flags, *args):
        return fn(*args, flags=dict(flags)) if self.flags else fn(*args)

    def launch_hooks(self, inputs, out, config, backend, flags):
        """(before, after) no-argument callables for this trial, or None without hooks."""
        if self.before_launch is None and self.after_launch is None:
            return None
        step = lambda fn: (lambda: fn and self._call(fn, flags, inputs, out, config, backend))
        return step(self.before_launch), step(self.after_launch)

    def inputs_for(self, shape, flags, dtype, generator):
        return self._call(self.make_inputs, flags, tuple(shape), dtype, generator)

    def launch_args_for(self, inputs, out, config, flags):
        return self._call(self.launch_args, flags, inputs, out, config)

    def reference_for(self, inputs, flags):
        return self._call(self.reference, flags, *inputs)

    def default_config_for(self, shape, flags, dtype, device):
        return self._call(self.default_config, flags, tuple(shape), dtype, device)

    @property
    def op(self):
        return self.id.split(".")[0]

    @property
    def tunables(self):
        return self.kernel.tunables

    def why_invalid(self, config, dtype, shape=None, flags=()):
        """None if ``config`` passes the kernel's validity rule for ``dtype`` (and, given ``shape``, its
        ``shape_rule``), else the reason."""
        missing = [k for k in self.tunables.names if k not in config]
        if missing:
            return f"config {config} lacks tunable(s) {', '.join(missing)}"
        size = torch.empty((), dtype=dtype).element_size()
        why = self.tunables.why_invalid({**config, "elem_bytes": size})
        if why is None and shape is not None and self.shape_rule is not None:
            why = self._call(self.shape_rule, flags, tuple(shape), config)
        return why

    def parse_shape(self, spec: str):
        """``"M,N,K"`` plus ``key=value`` flags -> (shape tuple, flags tuple of (key, value))."""
        sizes, flags = [], []
        # "x" separates sizes (512x512x512) but may appear in a flag's value (fmt=mxfp4)
        parts = [q for p in spec.split(",") for q in ([p] if "=" in p else p.split("x"))]
        for part in (p.strip() for p in parts):
            if not part:
                continue
            if "=" in part:
                key, value = part.split("=", 1)
                if key not in self.flags:
                    raise ValueError(f"{self.id}: unknown flag {key!r} in --shapes {spec!r}; "
                                     f"flags: {', '.join(self.flags) or 'none'}")
                flags.append((key, value))
                continue
            try:
                sizes.append(int(part))
            except ValueError:
                raise ValueError(f"{self.id}: bad size {part!r} in --shapes {spec!r}; give "
                                 f"{','.join(self.shape_names)}") from None
        if len(sizes) != len(self.shape_names):
            raise ValueError(f"{self.id}: --shapes {spec!r} has {len(sizes)} sizes; the shape tuple is "
                             f"{','.join(self.shape_names)}")
        if any(n <= 0 for n in sizes):
            raise ValueError(f"{self.id}: --shapes {spec!r}: every size must be positive")
        return tuple(sizes), self.canonical_flags(flags)


def register(tk_kernel: TuneKernel):
    _REGISTRY[tk_kernel.id] = tk_kernel
    return tk_kernel


def load_kernel_modules(extra=()):
    """Import the modules that register kernels: tilekit's own ops plus ``extra`` (module names or file
    paths, e.g. a test's injected kernel)."""
    for name in list(KERNEL_MODULES) + list(extra):
        if name.endswith(".py"):
            mod_name = "tilekit_tune_extra_" + str(abs(hash(name)))
            if mod_name not in sys.modules:
                spec = importlib.util.spec_from_file_location(mod_name, name)
                module = importlib.util.module_from_spec(spec)
                sys.modules[mod_name] = module
                spec.loader.exec_module(module)
        else:
            importlib.import_module(name)


def kernels(extra=()) -> dict:
    """Every registered kernel, ``{"OP.KERNEL": TuneKernel}``."""
    load_kernel_modules(extra)
    return dict(_REGISTRY)


def resolve(names, extra=()):
    """``["matmul", "softmax.backward"]`` -> TuneKernels. ``OP`` alone means all of that op's kernels."""
    table = kernels(extra)
    if not names:
        return list(table.values())
    out = []
    for name in names:
        hits = [k for kid, k in table.items() if kid == name or k.op == name]
        if not hits:
            raise ValueError(f"unknown op kernel {name!r}; tunable: {', '.join(sorted(table))}")
        out += [k for k in hits if k not in out]
    return out
