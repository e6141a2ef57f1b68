"""The Triton backend: Tile IR -> Triton source (Jinja) -> ``triton.jit``.

With no GPU the generated kernel runs under Triton's interpreter automatically; the process-wide
``TRITON_INTERPRET`` variable is never touched, so the user's own Triton code is unaffected.
"""
from __future__ import annotations

import threading

from ...cache import read_generated, write_generated
from ...errors import BackendUnavailable
from .. import check_launch_device, toolchain
from .lower import emit, function_name, tensor_param_names



# Triton 3.6 and 3.7's interpreter types an int argument equal to 1 as int1 and fails ("numpy data itemsize
# (32 bits) exceeds dtype primitive_bitwidth (1 bits)"), so any tensor with a dimension of 1 breaks it;
# 3.8 fixed it. Their GPU compiler is fine, so only CPU launches need the newer release.
INTERPRETER_MIN_VERSION = (3, 8)


def interpreter_unavailable_reason():
    """None when Triton's interpreter can run kernels here, else why not."""
    import triton
    if toolchain.triton_series() < INTERPRETER_MIN_VERSION:
        need = ".".join(map(str, INTERPRETER_MIN_VERSION))
        return (f"triton {triton.__version__}'s interpreter mistypes int arguments equal to 1; running on CPU "
                f"tensors needs triton>={need} (compiling for GPU targets works with this one)")
    return None


def launch_unavailable_reason():
    """None when a launch can work here (a GPU, or an interpreter that works), else why not."""
    return None if toolchain.gpu_present() else interpreter_unavailable_reason()


def available():
    try:
        import triton
    except Exception as e:
        return False, f"triton is not importable: {e}"
    if toolchain.gpu_present():
        return True, f"triton {triton.__version__} on a GPU"
    why = interpreter_unavailable_reason()
    if why:
        return True, f"GPU compiles only: {why}"
    return True, f"triton {triton.__version__} interpreter (no GPU found; CPU tensors)"


def load_module(path, interpret: bool, source=None):
    """Execute a generated module with ``_jit`` bound to the interpreter's or the compiler's wrapper.

    The file is checked first: against ``source`` (what it must hold; a file that differs is regenerated)
    or else against the content hash in its name. Triton reads the kernel's source back from the file, so
    the checked file is what both Python and Triton see. ``ns["__file__"]`` is where it was loaded from."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction
    wrap = InterpretedFunction if interpret else JITFunction
    path, text = read_generated(path, source)
    code = compile(text, path, "exec")
    ns = {"__name__": f"tilekit_generated_{abs(hash(path))}", "__file__": path, "_jit": wrap}
    exec(code, ns)
    return ns


# Triton's interpreter patches triton.language while a kernel runs and restores it afterwards, so two
# threads interpreting at once break each other ("Did you forget to add @triton.jit ?"): they take turns.
_INTERPRETER_LOCK = threading.Lock()


class _TakingTurns:
    """An interpreted kernel whose runs hold ``_INTERPRETER_LOCK`` (compiled GPU kernels need no lock)."""
    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __getitem__(self, grid):
        run = self.fn[grid]

        def locked(*args, **kwargs):
            with _INTERPRETER_LOCK:
                return run(*args, **kwargs)
        return locked


def _flat_items(fn, var, layouts=None):
    """The expressions of Triton's positional argument list for ``fn``'s parameters (see
    ``tensor_param_names``), ``var(i, p)`` naming the local that holds parameter ``p``. ``layouts``: {name:
    (sizes, strides)} of tensors whose layout the caller has checked, passed as constants."""
    items = []
    for i, p in enumerate(fn.params):
        a = var(i, p)
        fixed = layouts.get(p.name) if layouts else None
        if p.kind == "scalar":
            items.append(a)
        elif fixed is not None:
            sizes, strides = fixed
            strides = strides[:-1] if p.value.type.packed else strides
            items += [f"{a}.words" if p.value.type.packed else a, *map(str, sizes), *map(str, strides)]
        elif p.value.type.packed:
            items += [f"{a}.words", f"*{a}.shape", f"*{a}.words.stride()[:-1]"]
        else:
            items += [a, f"*{a}.shape", f"*{a}.stride()"]
    return items


def _flattener(fn):
    """A function from {param name: arg} to Triton's positional argument list.

    It is generated as straight-line code for this kernel's parameters: it runs on every warm launch, and
    a loop over a plan costs several microseconds more than the unrolled version."""
    lines = [f"    a{i} = args[{p.name!r}]" for i, p in enumerate(fn.params)]
    items = _flat_items(fn, lambda i, p: f"a{i}")
    src = "def flatten(args):\n" + "\n".join(lines) + f"\n    return [{', '.join(items)}]\n"
    ns = {}
    exec(compile(src, f"<tilekit flatten {fn.name}>", "exec"), ns)
    return ns["flatten"]


class CompiledTriton:
    def __init__(self, kernel, fn, spec):
        self.fn = fn
        self.name = kernel.__name__
        self.kernel = kernel
        self.source = emit(fn, self.name)
        self.path = write_generated("triton", self.name, self.source, ".py")
        self.interpret = not toolchain.gpu_present()
        self.options = {} if self.interpret else {k: v for k, v in spec.options.items() if k in ("num_warps", "num_stages")}
        self._jit = None
        self.flatten = _flattener(fn)

    @property
    def jit_fn(self):
        if self._jit is None:
            ns = load_module(self.path, self.interpret, self.source)
            self.path = ns["__file__"]
            from triton.runtime.interpreter import InterpretedFunction
            from triton.runtime.jit import JITFunction
            fn = ns[function_name(self.name)]
            self._jit = _TakingTurns(InterpretedFunction(fn)) if self.interpret else JITFunction(fn)
        return self._jit

    def check_device(self, args, device):
        """Called once per specialization key (the key includes every tensor's device)."""
        check_launch_device("triton", device)  # the interpreter takes CPU tensors, a GPU build GPU ones
        why = launch_unavailable_reason()
        if why:
            raise BackendUnavailable(f"cannot launch {self.name} on the triton backend: {why}")

    def positional_launch(self, names, layouts=None):
        """``run(*values, grid)`` for arguments given in the order ``names``: the flattening and the Triton
        launch as one generated function (the warm path of ``Kernel``'s straight-line launchers).
        ``layouts``: {name: (sizes, strides)} that the caller guarantees, baked in as constants."""
        where = {n: f"v{i}" for i, n in enumerate(names)}
        if any(p.name not in where for p in self.fn.params):
            return None
        items = _flat_items(self.fn, lambda i, p: where[p.name], layouts)
        src = (f"def run({''.join(v + ', ' for v in where.values())}grid):\n"
               f"    try:\n        (ck._jit or ck.jit_fn)[grid]({', '.join(items)}, **options)\n"
               f"    except Exception as e:\n        reraise(e, ck.kernel, 'triton')\n")
        ns = {"ck": self, "options": self.options, "reraise": toolchain.reraise_located}
        exec(compile(src, f"<tilekit triton launch {self.name}>", "exec"), ns)
        return ns["run"]

    def launch(self, args, grid):
        try:  # on a GPU, Triton compiles at the first launch
            (self._jit or self.jit_fn)[grid](*self.flatten(args), **self.options)
        except Exception as e:
            toolchain.reraise_located(e, self.kernel, "triton")


def build(kernel, fn, spec):
    return CompiledTriton(kernel, fn, spec)


def aot(kernel, fn, spec, target):
    from .gpu_compile import compile_for_target
    return compile_for_target(kernel, fn, spec, target)


__all__ = ["available", "build", "aot", "emit", "tensor_param_names"]
