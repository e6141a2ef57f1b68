"""``@tk.kernel`` and ``@tk.func``: specialization, the kernel cache, and launch.

A launch binds its arguments to a *specialization key* (tensor dtypes and ranks, scalar types,
constexpr values, backend, target). The first launch of a key runs the front end, the passes and the
backend; later launches with the same key go straight from the in-memory cache to the backend's
launcher, doing no front-end or lowering work.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import os
import struct
import sys

import numpy as np
import torch

from . import __version__
from . import dtypes as D
from .errors import CompileError
from .analysis import param_uses as _param_uses, reached_helpers as _reached_helpers, written_params
from .ir import TensorType, format_function
from .jit import JitFunction, KernelObject, SourceInfo, func  # noqa: F401  (re-exported: tk.func, tk.JitFunction)
from .language import constexpr
from .packing import PackedTensor
from .semantic import python_dtype

LAUNCH_OPTIONS = ("backend", "num_warps", "num_stages", "check_bounds")
# check_bounds=True by default for every launch of the process (``TILEKIT_CHECK_BOUNDS=1``, read at import).
CHECK_BOUNDS = os.environ.get("TILEKIT_CHECK_BOUNDS", "").strip().lower() not in ("", "0", "false", "no", "off")
_AOT = object()  # ``specialize(..., backend=_AOT)``: for kernel.compile, which names a target instead


def _is_constexpr_annotation(ann):
    if ann is constexpr or isinstance(ann, constexpr):
        return True
    return isinstance(ann, str) and ann.split(".")[-1] == "constexpr"


class Specialization:
    """Everything that identifies one compiled variant of a kernel."""
    __slots__ = ("arg_specs", "constexprs", "backend", "options", "key", "divisible")

    def __init__(self, arg_specs, constexprs, backend, options):
        self.arg_specs, self.constexprs, self.backend, self.options = arg_specs, constexprs, backend, options
        # For AOT compiles: {(param, "shape"|"stride", dim)} known divisible by 16 (None: assume all).
        self.divisible = None
        self.key = (tuple(arg_specs.items()), tuple((n, value_key(v)) for n, v in constexprs.items()), backend,
                    tuple(sorted((n, value_key(v)) for n, v in options.items())))


_F64 = struct.Struct("<d")


def value_key(v):
    """A constexpr or launch-option value as it enters a cache key: with its type, so 1, 1.0 and True (equal
    and equally hashed in Python) are different keys, and floats by bit pattern, so 0.0 and -0.0 differ
    and a nan equals itself (a nan key would otherwise miss on every launch)."""
    t = type(v)
    if t is int or t is bool or t is str:
        return (t, v)
    if isinstance(v, (float, np.floating)):
        return (t, _F64.pack(float(v)))
    if t is tuple:
        return (t, tuple(map(value_key, v)))
    return (t, v)


# A tensor whose elements span this many bytes or more from its data pointer needs 64-bit element offsets
# (conservative: counts bytes, not elements). The span, not the storage: a small view of a huge storage
# addresses only its own elements, and a span is fixed by the sizes and strides, which a launch reads anyway.
LARGE_SPAN_BYTES = 2**31


def _is_large(t: torch.Tensor) -> bool:
    # the storage bounds the span and costs one C call: only views of a large storage compute the span
    return t.untyped_storage().nbytes() >= LARGE_SPAN_BYTES and _span_is_large(t)


def _span_is_large(t):
    if t.numel() == 0:
        return False
    last = sum((n - 1) * st for n, st in zip(t.shape, t.stride()))
    return (last + 1) * t.element_size() >= LARGE_SPAN_BYTES


def _arg_spec(name, x):
    if isinstance(x, torch.Tensor):
        return TensorType(D.from_torch(x.dtype), x.dim(), large=_is_large(x))
    if isinstance(x, PackedTensor):
        return TensorType(x.dtype, len(x.shape), packed=True, large=_is_large(x.words))
    dt = python_dtype(x)
    if dt is None:
        raise TypeError(f"argument '{name}' is a {type(x).__name__}; kernels take torch tensors, "
                        f"tk.PackedTensor, int, float or bool")
    return dt


def _def_line(fn):
    """The line of a function's ``def`` (``co_firstlineno`` is its first decorator's)."""
    try:
        lines, start = inspect.getsourcelines(fn)
    except (OSError, TypeError):
        return fn.__code__.co_firstlineno
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("def ", "async def ")):
            return start + i
    return start


class Kernel(KernelObject):
    def __init__(self, fn, tunables=None):
        self.fn = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        sig = inspect.signature(fn)
        self.params = list(sig.parameters.values())
        for p in self.params:
            if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                raise CompileError(f"kernel {fn.__name__}: *args/**kwargs parameters are not supported",
                                   inspect.getsourcefile(fn), _def_line(fn))
            if p.name in LAUNCH_OPTIONS:
                raise CompileError(f"kernel {fn.__name__}: parameter name '{p.name}' is reserved for launch options",
                                   inspect.getsourcefile(fn), _def_line(fn))
        self.param_names = [p.name for p in self.params]
        self.constexpr_names = {p.name for p in self.params if _is_constexpr_annotation(p.annotation)}
        self.defaults = {p.name: p.default for p in self.params if p.default is not p.empty}
        self.runtime_names = [n for n in self.param_names if n not in self.constexpr_names]
        self.tunables = tunables
        self._info = None
        self._tensor_roles = None
        self._cache = {}
        self._fast = {}
        self._writes = {}      # spec.key -> the tensor parameters the compiled IR stores into
        self._bounds = {}      # spec.key -> passes.bounds.BoundsChecks of a check_bounds variant (or None)
        self._probes = None    # (scope, name, helper) for every @tk.func the compiled variants inlined
        self.last_launch_stats = None  # the reference executor's LaunchStats of the latest launch, else None
        self._constexpr_positions = {i for i, n in enumerate(self.param_names) if n in self.constexpr_names}
        self._static_names = self.constexpr_names | set(LAUNCH_OPTIONS)
        self._launch_keys = {}  # (number of positional arguments, keyword names) -> its generated key function
        self._exact = _ExactLaunchers(self)  # the warm launch's first try
        self._hash = None

    # -- source --
    def source_info(self):
        if self._info is None:
            self._info = SourceInfo(self.fn)
        return self._info

    @property
    def tensor_params(self):
        """Runtime parameters the kernel uses as tensors (see ``_param_uses``)."""
        return self._param_uses()[0]

    def _param_uses(self):
        if self._tensor_roles is None:
            self._tensor_roles = _param_uses(self.source_info().node, set(self.runtime_names), self.fn.__globals__)
        return self._tensor_roles

    @property
    def source_hash(self):
        """Hash of the kernel's source and of every @tk.func it reaches, transitively."""
        self._check_helpers()
        if self._hash is None:
            helpers, probes = _reached_helpers(self.fn, self.source_info().node)
            h = hashlib.sha256(self.source_info().text.encode())
            for jf in helpers:
                h.update(b"\0" + jf.fn.__qualname__.encode() + b"\0" + jf.source_info().text.encode())
            h.update(__version__.encode())
            self._hash = h.hexdigest()[:16]
            self._probes = probes
        return self._hash

    def _check_helpers(self):
        """Forget everything compiled if a name through which the kernel reaches a @tk.func now holds
        something else (the helper was redefined or rebound): those variants inlined the old body."""
        probes = self._probes
        if probes:
            for scope, name, obj in probes:
                if scope.get(name) is not obj:
                    self._forget_compiled()
                    return

    def _forget_compiled(self):
        self._hash = self._probes = self._info = self._tensor_roles = None
        self._cache.clear()
        self._fast.clear()
        self._exact = _ExactLaunchers(self)
        self._writes.clear()
        self._bounds.clear()

    # -- binding --
    def bind(self, args, kwargs):
        """(runtime args by name, constexprs by name, launch options)."""
        options = {k: kwargs.pop(k) for k in LAUNCH_OPTIONS if k in kwargs}
        if len(args) > len(self.param_names):
            raise TypeError(f"{self.__name__}() takes {len(self.param_names)} arguments "
                            f"({', '.join(self.param_names)}), got {len(args)}")
        bound = dict(zip(self.param_names, args))
        for k, v in kwargs.items():
            if k not in self.param_names:
                raise TypeError(f"{self.__name__}() got an unexpected argument '{k}'; parameters are "
                                f"{', '.join(self.param_names)}")
            if k in bound:
                raise TypeError(f"{self.__name__}() got multiple values for argument '{k}'")
            bound[k] = v
        missing = [n for n in self.param_names if n not in bound and n not in self.defaults]
        if missing:
            raise TypeError(f"{self.__name__}() missing argument(s): {', '.join(missing)}")
        runtime, cx = {}, {}
        for n in self.param_names:
            v = bound[n] if n in bound else self.defaults[n]
            if n in self.constexpr_names:
                cx[n] = v
            else:
                runtime[n] = v
        return runtime, cx, options

    def specialize(self, runtime, cx, options, backend=None):
        self._check_helpers()
        roles, scalar_uses = self._param_uses()
        specs = {}
        device = None
        for n, x in runtime.items():
            spec = _arg_spec(n, x)
            is_tensor = isinstance(spec, TensorType)
            if n in roles and not is_tensor:
                raise TypeError(f"{self.__name__}: argument '{n}' must be a torch.Tensor (the kernel reads or "
                                f"writes it as a tensor), got {type(x).__name__}")
            if is_tensor:
                if n not in roles and n in scalar_uses:
                    raise TypeError(f"{self.__name__}: argument '{n}' is a tensor, but the kernel uses it as a "
                                    f"scalar")
                dev = x.device
                if device is None:
                    device = dev
                elif dev != device and backend is not _AOT:  # AOT examples only give types and shapes
                    raise ValueError(f"{self.__name__}: tensors are on different devices: '{n}' is on {dev}, "
                                     f"others on {device}")
            specs[n] = spec
        for n, v in cx.items():
            try:
                hash(v)
            except TypeError:
                raise TypeError(f"{self.__name__}: constexpr '{n}' must be hashable, got {type(v).__name__}") from None
        opts = {k: v for k, v in options.items() if k not in ("backend", "check_bounds")}
        if _check_bounds_option(self, options) and backend != "reference":
            opts["check_bounds"] = True  # in the key only when on, so False and absent share one variant
        if backend is _AOT:  # compiling for a named target: no launch backend to choose
            return Specialization(specs, cx, None, opts), device
        from .backends import select_backend
        name = select_backend(backend or options.get("backend"), device)
        if name == "reference":  # the reference executor checks every access itself, always
            opts.pop("check_bounds", None)
        return Specialization(specs, cx, name, opts), device

    # -- compile pipeline --
    def _ir(self, spec, check_bounds=None):
        from .frontend import build_function
        from .passes import run_pipeline
        if check_bounds is None:
            check_bounds = spec.options.get("check_bounds", False)
        return run_pipeline(build_function(self, spec.arg_specs, spec.constexprs), check_bounds=check_bounds)

    def compiled(self, spec):
        self.source_hash  # checks the @tk.func helpers (and records them on a first compile)
        ck = self._cache.get(spec.key)
        if ck is None:
            from .backends import get_backend
            fn = self._ir(spec)
            ck = get_backend(spec.backend).build(self, fn, spec)
            bounds = fn.bounds_checks
            self._bounds[spec.key] = bounds
            self._writes[spec.key] = tuple(n for n in written_params(fn) if bounds is None or n != bounds.param)
            self._cache[spec.key] = ck
        return ck

    # -- user API --
    def __getitem__(self, grid):
        return Launcher(self, grid)

    def ir(self, *args, **kwargs):
        runtime, cx, options = self.bind(args, dict(kwargs))
        spec, _ = self.specialize(runtime, cx, options, backend="reference")
        return format_function(self._ir(spec, check_bounds=_check_bounds_option(self, options)))

    def source(self, backend, *args, **kwargs):
        runtime, cx, options = self.bind(args, dict(kwargs))
        spec, _ = self.specialize(runtime, cx, options, backend=backend)
        return self.compiled(spec).source

    def compile(self, target, *args, **kwargs):
        """Ahead-of-time compile for ``target`` (``sm_80``, ``sm_90``, ``gfx90a``, ``gfx942``, ...).

        Arguments are examples (tensors on any device, ``meta`` included) or signature strings:
        ``"fp16[4096,4096]"`` for a tensor, ``"i32"`` / ``"i64"`` / ``"fp32"`` for a scalar. Returns an
        ``Artifact`` with source, assembly, binary, resource report and instruction summary."""
        from .backends import aot_compile
        args = tuple(example_from_signature(a) if isinstance(a, str) else a for a in args)
        kwargs = {k: (example_from_signature(v) if isinstance(v, str) and k not in self.constexpr_names
                      and k not in LAUNCH_OPTIONS else v) for k, v in kwargs.items()}
        runtime, cx, options = self.bind(args, dict(kwargs))
        backend = options.pop("backend", None)
        spec, _ = self.specialize(runtime, cx, options, backend=_AOT)
        spec = shared_layouts(spec, runtime)
        spec.divisible = _divisible_by_16(runtime)
        fn = self._ir(spec)
        return aot_compile(self, fn, spec, target, backend=backend)

    def _first_launch(self, args, kwargs, key):
        """The slow path of a launch: bind, check, specialize, compile; remember the result under ``key``."""
        runtime, cx, options = self.bind(args, dict(kwargs))
        spec, device = self.specialize(runtime, cx, options)
        ck = self.compiled(spec)
        check = getattr(ck, "check_device", None)
        if check is not None:
            check(runtime, device)
        # Calls with this key pass the same names positionally and by keyword, so if every runtime
        # argument is positional here, it is in every later call with this key.
        positional = [(i, n) for i, n in enumerate(self.param_names[:len(args)]) if n not in self.constexpr_names]
        if len(positional) != len(self.runtime_names):
            positional = None
        meta, outputs, lazy = {**cx, **options}, self._outputs(spec, runtime), _lazy_inputs(self, runtime, spec)
        bounds = _BoundsFlags(self._bounds[spec.key], device, spec.backend) if self._bounds.get(spec.key) else None
        go = (_straight_line_launcher(self, ck, meta, positional, outputs)
              if positional is not None and not lazy and bounds is None else None)
        entry = (ck, meta, positional, outputs, lazy, bounds, go, spec)
        try:
            self._fast[key] = entry
        except TypeError:
            pass
        return entry

    def _outputs(self, spec, runtime):
        """((name, is packed), ...) of the tensors this variant writes: each launch checks them for overlap."""
        return tuple((n, isinstance(runtime[n], PackedTensor)) for n in self._writes.get(spec.key, ()))

    def launch_key(self, n, names=()):
        """The function ``(args, kwargs) -> launch key`` for ``n`` positional arguments and the keyword
        arguments ``names``: generated as straight-line code per (arity, names), since it runs on every
        warm launch (a loop calling ``_arg_key`` per argument costs ~1 us a tensor)."""
        fn = self._launch_keys.get((n, names))
        if fn is None:
            tensor = ("(({a}.dtype, {a}.dim(), {a}.device, {a}.untyped_storage().nbytes() >= LARGE and "
                      "span_is_large({a}), {a}.is_neg()) if type({a}) is Tensor else arg_key({a}))")
            static = "((int, {a}) if type({a}) is int else value_key({a}))"
            items = [(static if i in self._constexpr_positions else tensor).format(a=f"a{i}") for i in range(n)]
            lines = [f"    {''.join(f'a{i}, ' for i in range(n))}= args"] if n else []
            for j, name in enumerate(names):
                lines.append(f"    k{j} = kwargs[{name!r}]")
                item = (static if name in self._static_names else tensor).format(a=f"k{j}")
                items.append(f"({name!r}, {item})")
            src = "def key(args, kwargs):\n" + "".join(l + "\n" for l in lines) + \
                  f"    return ({''.join(it + ', ' for it in items)})\n"
            ns = {"Tensor": torch.Tensor, "LARGE": LARGE_SPAN_BYTES, "arg_key": _arg_key, "value_key": value_key,
                  "span_is_large": _span_is_large}
            exec(compile(src, f"<tilekit launch key {self.__name__}/{n}/{','.join(names)}>", "exec"), ns)
            fn = self._launch_keys[(n, names)] = ns["key"]
        return fn

    def __call__(self, *args, **kwargs):
        raise TypeError(f"launch a kernel with a grid: {self.__name__}[grid](...)")

    def __repr__(self):
        return f"<tilekit kernel {self.__name__}>"


def _arg_key(a):
    """What about a runtime argument decides its specialization (its value, for constexprs, is added
    separately)."""
    t = type(a)
    if t is torch.Tensor or isinstance(a, torch.Tensor):
        # is_neg: a view torch negates lazily (z.conj().imag) holds the un-negated values in memory
        return (a.dtype, a.dim(), a.device, _is_large(a), a.is_neg())
    if t is int:
        return int if -2**31 <= a < 2**31 else "i64"
    if t is float or t is bool:
        return t
    if t is PackedTensor:
        return (a.dtype, len(a.shape), a.words.device, _is_large(a.words), a.words.is_neg())
    return ("other", t)


def _lazy_inputs(k, runtime, spec):
    """Names of the read-only tensors that carry torch's lazy negation or conjugation bit: each launch
    passes a resolved copy instead (the kernel reads raw memory, which holds the values un-negated). Such
    a tensor that the kernel writes is rejected: a resolved copy would leave the caller's view unwritten."""
    written = k._writes.get(spec.key, ())
    lazy = []
    for n, x in runtime.items():
        packed = isinstance(x, PackedTensor)
        t = x.words if packed else x
        if not isinstance(t, torch.Tensor) or not (t.is_neg() or t.is_conj()):
            continue
        bit = "negation" if t.is_neg() else "conjugation"
        if n in written or packed:
            what = "cannot read packed words through it" if packed else "writes it, and cannot write through it"
            raise ValueError(f"{k.__name__}: argument '{n}' is a view with torch's lazy {bit} bit set (as "
                             f"z.conj().imag is); the kernel {what}. Pass a tensor without the bit "
                             f"(x.resolve_neg() / x.resolve_conj() return a copy)")
        lazy.append(n)
    return tuple(lazy)


def internal_overlap(shape, stride):
    """Whether two different indices of a tensor with this layout address the same element: None when
    the layout is too large to decide (an interleaving layout of over 2**22 elements)."""
    if any(s == 0 for s in shape):
        return False
    dims = sorted((st, sz) for sz, st in zip(shape, stride) if sz > 1)
    if any(st == 0 for st, _ in dims):
        return True
    extent = 1  # the dims taken so far (by increasing stride) address offsets 0 .. extent - 1
    for st, sz in dims:
        if st < extent:
            break
        extent += st * (sz - 1)
    else:
        return False  # each stride clears everything the smaller ones reach: no two indices meet
    numel = math.prod(sz for _, sz in dims)
    if numel > 2**22:
        return None
    offsets = torch.zeros(1, dtype=torch.int64)
    for st, sz in dims:
        offsets = (offsets[:, None] + torch.arange(sz, dtype=torch.int64) * st).flatten()
    return torch.unique(offsets).numel() != numel


_OVERLAP_SEEN = {}  # (shape, stride) -> internal_overlap(...) for written non-contiguous tensors


def _check_no_internal_overlap(k, name, t):
    """A written tensor whose elements share memory (a stride of 0, an overlapping as_strided view) would
    make the last of several stores win: rejected, as torch rejects such outputs. Called per launch for
    written tensors that are not contiguous (contiguous ones cannot overlap); the answer is remembered
    per layout."""
    layout = (tuple(t.shape), t.stride())
    try:
        overlap = _OVERLAP_SEEN[layout]
    except KeyError:
        if len(_OVERLAP_SEEN) > 4096:
            _OVERLAP_SEEN.clear()
        overlap = _OVERLAP_SEEN[layout] = internal_overlap(*layout)
    if overlap is False:
        return
    why = ("has elements that share memory" if overlap else
           "may have elements that share memory (its layout is too large to check)")
    raise ValueError(f"{k.__name__}: argument '{name}' (shape {tuple(t.shape)}, strides {t.stride()}) is written by "
                     f"the kernel but {why}, so the last of several writes would win. Pass a tensor without "
                     f"internal overlap (x.contiguous() or torch.empty(...)); inputs may overlap.")


_SCALAR_EXAMPLES = {"i32": 1, "i64": 2**40, "fp32": 1.0, "i1": True}


def example_from_signature(text: str):
    """An example argument from a signature string: ``"bf16[128,64]"`` → a meta tensor; ``"i32"`` → an int."""
    s = text.strip()
    if s in _SCALAR_EXAMPLES:
        return _SCALAR_EXAMPLES[s]
    if "[" in s and s.endswith("]"):
        name, dims = s[:-1].split("[", 1)
        dt = next((d for d in D.all_dtypes() if name in (d.short, d.name)), None)
        if dt is not None:
            try:
                shape = [int(x) for x in dims.split(",") if x.strip()]
            except ValueError:
                shape = None
            if shape is not None and dt.torch_dtype is not None:
                return torch.empty(shape, dtype=dt.torch_dtype, device="meta")
            if shape and dt.is_packed:  # "int3[4096,4096]": a meta PackedTensor
                return PackedTensor.empty(shape, dt, device="meta")
    raise ValueError(f"bad signature {text!r}: use a tensor like 'fp16[4096,4096]' (packed: 'int3[4096,4096]') or a scalar "
                     f"{'/'.join(_SCALAR_EXAMPLES)}")


def shared_layouts(spec, runtime):
    """``spec`` with each tensor whose sizes (strides) equal an earlier tensor parameter's marked
    ``shape_of`` (``strides_of``) that one (see TensorType), or ``spec`` itself when none does. Only
    variants for one exact layout take it (``kernel.compile``, and ``_ExactLaunchers``, whose guard checks
    every size and stride): the launch key does not compare tensors with each other."""
    specs, seen, changed = dict(spec.arg_specs), [], False
    for name, t in spec.arg_specs.items():
        x = runtime.get(name)
        if not isinstance(t, TensorType) or t.packed or not isinstance(x, torch.Tensor):
            continue
        shape, strides = tuple(x.shape), x.stride()
        shape_of = next((n for n, s, _ in seen if s == shape), None)
        strides_of = next((n for n, _, st in seen if st == strides), None)
        if shape_of or strides_of:
            specs[name] = dataclasses.replace(t, shape_of=shape_of, strides_of=strides_of)
            changed = True
        seen.append((name, shape, strides))
    if not changed:
        return spec
    out = Specialization(specs, spec.constexprs, spec.backend, spec.options)
    out.divisible = spec.divisible
    return out


def _divisible_by_16(runtime):
    out = set()
    for name, a in runtime.items():
        if isinstance(a, PackedTensor):
            a = a.words
        if isinstance(a, torch.Tensor):
            out.update((name, "shape", d) for d, s in enumerate(a.shape) if s % 16 == 0)
            out.update((name, "stride", d) for d, s in enumerate(a.stride()) if s % 16 == 0)
    return out


class Launcher(KernelObject):
    """``kernel[grid]``. Its call is the warm launch path: one dict lookup on a key built from the
    arguments' types, then the backend's launcher; everything else happens once per key."""
    __slots__ = ("kernel", "grid")

    def __init__(self, kernel, grid):
        self.kernel = kernel
        self.grid = grid

    def __call__(self, *args, **kwargs):
        k = self.kernel
        if k._probes:
            k._check_helpers()
        exact = k._exact
        last = exact.last
        if last is not None and last(args, kwargs, self.grid) is not MISS:  # the previous call's layout
            return
        layout = exact.layout_of(len(args), tuple(kwargs))(args, kwargs)
        for launch in exact.by_layout.get(layout, ()):  # a layout seen before (one per variant)
            if launch(args, kwargs, self.grid) is not MISS:
                exact.last = launch
                return
        key = k.launch_key(len(args), tuple(kwargs))(args, kwargs)
        if CHECK_BOUNDS:  # the process-wide default decides the variant too
            key += (_CHECK_BOUNDS_ON,)
        try:
            entry = k._fast.get(key)
        except TypeError:  # an unhashable constexpr: the slow path explains
            entry = None
        first = entry is None
        if first:
            entry = k._first_launch(args, kwargs, key)
        if entry[6] is not None:  # this specialization's straight-line launcher
            entry[6](args, self.grid)  # first: it rejects a written tensor that overlaps itself
            if not first:  # a kernel launched once compiles one variant; a second call gets its exact launcher
                exact.add(layout, entry, args, kwargs)
            return
        ck, grid_meta, positional_names, outputs, lazy, bounds, _, _ = entry
        if positional_names is not None:  # every runtime argument came positionally (the key says so)
            runtime = {n: args[i] for i, n in positional_names}
        else:
            bound = dict(zip(k.param_names, args))
            bound.update(kwargs)
            runtime = {n: (bound[n] if n in bound else k.defaults[n]) for n in k.runtime_names}
        for n, packed in outputs:  # overlap is a matter of strides, which the key leaves out
            t = runtime[n].words if packed else runtime[n]
            if not t.is_contiguous():
                _check_no_internal_overlap(k, n, t)
        if lazy:  # the key says which arguments carry a lazy bit (only read-only ones get this far)
            for n in lazy:
                runtime[n] = runtime[n].resolve_conj().resolve_neg()
        grid = _launch_grid(k, self.grid, grid_meta)
        if 0 in grid:
            k.last_launch_stats = None
            return
        if bounds is not None:
            k.last_launch_stats = None
            bounds.launch(ck, runtime, grid)
            return
        k.last_launch_stats = ck.launch(runtime, grid)  # LaunchStats from the reference backend, else None


def _launch_grid(k, grid, grid_meta):
    """The launch's grid as a tuple of 1 to 3 non-negative ints (a callable grid gets the constexprs)."""
    if callable(grid):
        grid = grid(grid_meta)
    if type(grid) is not tuple:
        grid = _as_grid_tuple(k, grid)
    n = len(grid)
    if n == 0 or n > 3:
        raise ValueError(f"{k.__name__}: grid must be 1 to 3 non-negative ints, got {grid}")
    for g in grid:
        if type(g) is not int or g < 0:
            _check_grid(k, grid)
            return tuple(int(x) for x in grid)
    return grid


def _straight_line_launcher(k, ck, grid_meta, positional_names, outputs):
    """``go(args, grid)`` for one specialization whose runtime arguments all come positionally, with no lazy
    inputs and no bounds flags: the warm launch as generated straight-line code (pick the arguments, check
    the written ones for overlap, evaluate the grid, launch)."""
    local = {n: f"v{j}" for j, (_, n) in enumerate(positional_names)}
    pick = [f"    {local[n]} = args[{i}]" for i, n in positional_names]
    checks = []
    for n, packed in outputs:
        t = f"{local[n]}.words" if packed else local[n]
        checks.append(f"    if not {t}.is_contiguous():\n        check_overlap(k, {n!r}, {t})")
    tail, ns = _launch_tail(k, ck, grid_meta, positional_names, local)
    src = "def go(args, grid):\n" + "\n".join(pick + checks + tail) + "\n"
    ns["check_overlap"] = _check_no_internal_overlap
    exec(compile(src, f"<tilekit launcher {k.__name__}>", "exec"), ns)
    return ns["go"]


def _launch_tail(k, ck, grid_meta, positional_names, local, layouts=None):
    """(source lines, namespace) that end a generated launcher: evaluate the grid, skip an empty one, and
    launch the positional arguments held in the locals ``local`` ({name: local}). A backend's
    ``positional_launch(names, layouts)`` gives a launch taking the arguments directly (``layouts``: sizes
    and strides the caller guarantees, passed as constants); otherwise it gets the usual name -> value dict."""
    names = [n for _, n in positional_names]
    run = getattr(ck, "positional_launch", None)
    run = run(names, layouts) if run is not None else None
    values = ", ".join(local[n] for n in names)
    call = (f"run({values}{', ' if names else ''}grid=grid)" if run is not None
            else f"ck.launch({{{', '.join(f'{n!r}: {local[n]}' for n in names)}}}, grid)")
    lines = ["    grid = launch_grid(k, grid, meta)",
             "    if 0 in grid:\n        k.last_launch_stats = None\n        return",
             f"    k.last_launch_stats = {call}"]
    return lines, {"k": k, "ck": ck, "run": run, "meta": grid_meta, "launch_grid": _launch_grid}


try:  # dynamo's C++ tensor check: dtype, device, dispatch keys, rank, sizes and strides in one call
    from torch._C._dynamo.guards import TensorGuards as _TensorGuards
except ImportError:  # pragma: no cover - a torch without dynamo: launches take the key path
    _TensorGuards = None

MISS = object()  # what an exact launcher returns for a call it does not cover
_MISSING = object()
_this_module = sys.modules[__name__]


class _ExactLaunchers:
    """A kernel's fastest warm launches: for a specialization (a launch key) and one exact argument layout
    (every tensor's sizes and strides), an *exact launcher* ``launch(args, kwargs, grid)`` is generated
    straight-line code that checks that a call has this key and this layout (returning ``MISS`` if not),
    and launches it with the sizes and strides as constants. A repeated call then costs one C++ check of
    its tensors (dynamo's TensorGuards: dtype, device, dispatch keys, so torch's lazy neg/conj bits too,
    rank, sizes, strides) instead of building and hashing a key and reading every size and stride from
    Python. The layout also fixes what the key derives from it (64-bit offsets, overlap of written
    tensors), so nothing else is checked per call.

    ``Launcher`` tries ``last`` (the previous call's launcher), then the launchers of the call's sizes
    (``layout_of``: every tensor's sizes), then the launch key, whose straight-line launch ``add``s one
    for the call. At most ``LIMIT`` sizes, and ``PER_LAYOUT`` launchers for one (strides, dtypes,
    constexprs, requires_grad), are kept: past that, new ones take the key path."""
    LIMIT = 64
    PER_LAYOUT = 4
    __slots__ = ("kernel", "last", "by_layout", "layout_fns")

    def __init__(self, kernel):
        self.kernel, self.last, self.by_layout, self.layout_fns = kernel, None, {}, {}

    def layout_of(self, n, names):
        """``(args, kwargs) -> hashable layout`` for n positional arguments and these keyword names,
        generated like ``Kernel.launch_key``: the sizes of every runtime tensor argument."""
        fn = self.layout_fns.get((n, names))
        if fn is None:
            k = self.kernel
            runtime = [f"a{i}" for i in range(n) if i not in k._constexpr_positions]
            runtime += [f"kwargs.get({name!r})" for name in names if name not in k._static_names]
            # sizes only: strides too would double the cost; the launchers of a layout check the strides
            item = "({a}.shape if type({a}) is Tensor else layout({a}))"
            src = ("def layout_of(args, kwargs):\n" + (f"    {''.join(f'a{i}, ' for i in range(n))}= args\n" if n else "")
                   + f"    return ({''.join(item.format(a=a) + ', ' for a in runtime)})\n")
            ns = {"Tensor": torch.Tensor, "layout": _other_layout}
            exec(compile(src, f"<tilekit layout {k.__name__}/{n}/{','.join(names)}>", "exec"), ns)
            fn = self.layout_fns[(n, names)] = ns["layout_of"]
        return fn

    def add(self, layout, entry, args, kwargs):
        """Make ``last`` the exact launcher of this call (generated unless one covers it already)."""
        have = self.by_layout.get(layout)
        if have is None:
            if len(self.by_layout) >= self.LIMIT:
                return
            have = self.by_layout[layout] = []
        if len(have) >= self.PER_LAYOUT:
            return
        launch = self._generate(entry, args, kwargs)
        if launch is not None:
            have.append(launch)
            self.last = launch

    def _generate(self, entry, args, kwargs):
        k = self.kernel
        from .backends import record as backend_record
        ck, meta, positional, spec = entry[0], entry[1], entry[2], entry[7]
        if backend_record(spec.backend).shares_layouts:  # this layout's equal sizes and strides, shared
            shared = shared_layouts(spec, {n: args[i] for i, n in positional})
            if shared is not spec:
                ck = k.compiled(shared)
        n, names = len(args), tuple(kwargs)
        lines = [f"    if len(args) != {n} or len(kwargs) != {len(names)}:\n        return MISS"]
        if n:
            lines.append(f"    {''.join(f'a{i}, ' for i in range(n))}= args")
        lines += [f"    k{j} = kwargs.get({name!r}, MISSING)" for j, name in enumerate(names)]
        values = [(f"a{i}", i in k._constexpr_positions, v) for i, v in enumerate(args)]
        values += [(f"k{j}", name in k._static_names, kwargs[name]) for j, name in enumerate(names)]
        ns = {"MISS": MISS, "MISSING": _MISSING, "value_key": value_key, "PackedTensor": PackedTensor,
              "kmod": _this_module}
        conds, tensors, tensor_values, layouts = [], [], [], {}
        local_of = {i: n for i, n in positional}
        for i, (local, static, v) in enumerate(values):
            t = type(v)
            if static:
                if t is bool or v is None:
                    conds.append(f"{local} is {v!r}")
                elif t is int or t is str:
                    conds.append(f"type({local}) is {t.__name__} and {local} == {v!r}")
                else:
                    ns[f"VK_{local}"] = value_key(v)
                    conds.append(f"value_key({local}) == VK_{local}")
            elif t is torch.Tensor or t is PackedTensor:
                w = v.words if t is PackedTensor else v
                if t is PackedTensor:
                    ns[f"DT_{local}"] = v.dtype
                    conds.append(f"type({local}) is PackedTensor and {local}.dtype == DT_{local} and "
                                 f"{local}.shape == {tuple(v.shape)!r}")
                tensors.append(f"{local}.words" if t is PackedTensor else local)
                tensor_values.append(w)
                layouts[local_of[i]] = (tuple(v.shape), w.stride())
            elif t is int:
                conds.append(f"type({local}) is int and {'' if -2**31 <= v < 2**31 else 'not '}"
                             f"-2147483648 <= {local} < 2147483648")
            elif t is float or t is bool:
                conds.append(f"type({local}) is {t.__name__}")
            else:
                return None
        if tensors:
            if _TensorGuards is None:
                return None
            ns["tensor_check"] = _TensorGuards(*tensor_values, dynamic_dims_sizes=[list(w.shape) for w in tensor_values],
                                               dynamic_dims_strides=[list(w.stride()) for w in tensor_values]).check
            conds.append(f"tensor_check({', '.join(tensors)})")
        conds.append(f"kmod.CHECK_BOUNDS is {CHECK_BOUNDS!r}")
        tail, launch_ns = _launch_tail(k, ck, meta, positional, {n: f"a{i}" for i, n in positional}, layouts)
        ns.update(launch_ns)
        src = ("def guarded(args, kwargs, grid):\n" + "\n".join(lines) + "\n"
               f"    if not ({' and '.join(conds)}):\n        return MISS\n" + "\n".join(tail) + "\n")
        exec(compile(src, f"<tilekit exact launcher {k.__name__}>", "exec"), ns)
        return ns["guarded"]


def _other_layout(a):
    """A non-tensor runtime argument's part of a layout: a packed tensor's words' sizes, or the type of
    anything else (its value is the exact launcher's to check)."""
    if type(a) is PackedTensor:
        return (PackedTensor, a.words.shape)
    return type(a)


# ---- check_bounds: the launch side of passes/bounds.py ---------------------------------------------------

_CHECK_BOUNDS_ON = ("check_bounds", "process default")


def _check_bounds_option(k, options):
    """The launch's check_bounds: its own option if given, else the process-wide default."""
    v = options.get("check_bounds", CHECK_BOUNDS)
    if type(v) is not bool:
        raise TypeError(f"{k.__name__}: check_bounds must be True or False, got {v!r}")
    return v


class _BoundsFlags:
    """Runs a check_bounds variant: a zeroed int32 flag tensor on the arguments' device is passed as the
    hidden parameter; after the launch it is read back (one device-to-host copy) and any word set raises
    ``OutOfBoundsError`` naming the op and its line."""
    __slots__ = ("checks", "device", "backend")

    def __init__(self, checks, device, backend):
        self.checks, self.device, self.backend = checks, device or torch.device("cpu"), backend

    def launch(self, ck, runtime, grid):
        flags = torch.zeros(self.checks.words, dtype=torch.int32, device=self.device)
        runtime[self.checks.param] = flags
        ck.launch(runtime, grid)
        words = flags.tolist()
        if any(words):
            shapes = {n: tuple(a.shape) for n, a in runtime.items() if isinstance(a, (torch.Tensor, PackedTensor))}
            raise self.checks.error(words, shapes, self.backend)


def _as_grid_tuple(k, grid):
    """An int, a list or any other sequence of ints as a tuple; anything else is a bad grid."""
    import operator
    if isinstance(grid, (tuple, list)):
        return tuple(grid)
    try:
        return (operator.index(grid),)
    except TypeError:
        raise ValueError(f"{k.__name__}: grid must be 1 to 3 non-negative ints, got {grid!r}") from None


def _check_grid(k, grid):
    import operator
    for g in grid:
        try:
            g = operator.index(g)
        except TypeError:
            raise ValueError(f"{k.__name__}: grid must be 1 to 3 non-negative ints, got {grid}") from None
        if g < 0:
            raise ValueError(f"{k.__name__}: grid must be 1 to 3 non-negative ints, got {grid}")


def kernel(fn=None, *, tunables=None):
    """Decorate a Python function as a tilekit kernel: ``@tk.kernel`` or ``@tk.kernel(tunables=...)``."""
    if fn is None:
        return lambda f: Kernel(f, tunables)
    return Kernel(fn, tunables)
