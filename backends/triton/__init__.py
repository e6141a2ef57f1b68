"""The Triton backend: Tile IR -> Triton source (Jinja) -> ``triton.jit``.

With no GPU the generated kernel runs under Triton's interpreter automatically; the process-wide
``TRITON_INTERPRET`` variable is never touched, so the user's own Triton code is unaffected.
"""
from __future__ import annotations

import functools

from ...cache import write_generated
from .lower import emit, function_name, tensor_param_names


@functools.lru_cache(maxsize=None)
def gpu_present() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


def available():
    try:
        import triton
    except Exception as e:
        return False, f"triton is not importable: {e}"
    if gpu_present():
        return True, f"triton {triton.__version__} on a GPU"
    return True, f"triton {triton.__version__} interpreter (no GPU found; CPU tensors)"


def load_module(path, interpret: bool):
    """Execute a generated module with ``_jit`` bound to the interpreter's or the compiler's wrapper."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction
    wrap = InterpretedFunction if interpret else JITFunction
    with open(path) as f:
        code = compile(f.read(), path, "exec")
    ns = {"__name__": f"tilekit_generated_{abs(hash(path))}", "__file__": path, "_jit": wrap}
    exec(code, ns)
    return ns


def _flattener(fn):
    """A function from {param name: arg} to Triton's positional argument list (see ``tensor_param_names``).

    It is generated as straight-line code for this kernel's parameters: it runs on every warm launch, and
    a loop over a plan costs several microseconds more than the unrolled version."""
    lines, items = [], []
    for i, p in enumerate(fn.params):
        a = f"a{i}"
        lines.append(f"    {a} = args[{p.name!r}]")
        if p.kind == "scalar":
            items.append(a)
            continue
        if p.value.type.packed:
            lines.append(f"    w{i} = {a}.words")
            items += [f"w{i}", f"*{a}.shape", f"*w{i}.stride()[:-1]"]
        else:
            items += [a, f"*{a}.shape", f"*{a}.stride()"]
    src = "def flatten(args):\n" + "\n".join(lines) + f"\n    return [{', '.join(items)}]\n"
    ns = {}
    exec(compile(src, f"<tilekit flatten {fn.name}>", "exec"), ns)
    return ns["flatten"]


class CompiledTriton:
    def __init__(self, kernel, fn, spec):
        self.fn = fn
        self.name = kernel.__name__
        self.source = emit(fn, self.name)
        self.path = write_generated("triton", self.name, self.source, ".py")
        self.interpret = not gpu_present()
        self.options = {} if self.interpret else {k: v for k, v in spec.options.items() if k in ("num_warps", "num_stages")}
        self._jit = None
        self.flatten = _flattener(fn)

    @property
    def jit_fn(self):
        if self._jit is None:
            ns = load_module(self.path, self.interpret)
            from triton.runtime.interpreter import InterpretedFunction
            from triton.runtime.jit import JITFunction
            self._jit = (InterpretedFunction if self.interpret else JITFunction)(ns[function_name(self.name)])
        return self._jit

    def check_device(self, args, device):
        """Called once per specialization key (the key includes every tensor's device)."""
        if self.interpret and device is not None and device.type != "cpu":
            raise ValueError(f"the Triton interpreter runs on CPU tensors; got tensors on {device}")

    def launch(self, args, grid):
        self.jit_fn[grid](*self.flatten(args), **self.options)


def build(kernel, fn, spec):
    return CompiledTriton(kernel, fn, spec)


def aot(kernel, fn, spec, target):
    from .gpu_compile import compile_for_target
    return compile_for_target(kernel, fn, spec, target)


__all__ = ["available", "build", "aot", "emit", "tensor_param_names"]
