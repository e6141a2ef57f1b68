"""Run-time checks that a candidate left the measuring instrument alone.

A snapshot is taken in the candidate's process after the worker, the timing code and tilekit's
ops are imported and *before* the candidate is: the identity (and code object) of the clocks,
``statistics``, the torch functions the worker relies on, every function and class of the
``tilekit.bench`` worker modules and of ``tilekit`` itself, and the dispatcher registrations of
every ``torch.ops.tilekit.*`` op. After the candidate has been imported, built, run and timed, the
snapshot is compared again; any difference is reported by name and scores the candidate as a cheat.

The timing samples themselves are taken with functions captured before the candidate is imported,
and their statistics are computed in the parent (``bench/timing.py``), so patching ``statistics``
or the clock in the candidate's process cannot change a score even where it went unnoticed.
"""
from __future__ import annotations

import importlib
import sys
import types

TILEKIT_NAMESPACE = "tilekit"

# Module attributes that take part in timing, in writing the results, or in the worker's checks.
WATCHED_ATTRIBUTES = (
    "time.perf_counter", "time.perf_counter_ns", "time.monotonic", "time.monotonic_ns", "time.time",
    "time.time_ns", "time.process_time", "time.sleep",
    "statistics.median", "statistics.mean", "statistics.fmean", "statistics.quantiles", "statistics.stdev",
    "json.dump", "json.dumps", "os.replace", "os.write", "os.fsync",
    "builtins.min", "builtins.max", "builtins.sum", "builtins.sorted", "builtins.len", "builtins.open",
    "builtins.float", "builtins.isinstance",
    "secrets.randbelow", "secrets.randbits",
    "torch.save", "torch.load", "torch.manual_seed", "torch.isnan", "torch.no_grad",
    "torch.Tensor.copy_", "torch.Tensor.data", "torch.Tensor.clone", "torch.Tensor.detach", "torch.Tensor.to", "torch.Tensor.sum",
    "torch.nn.Module.__call__", "torch.nn.Module._call_impl",
    "torch.cuda.synchronize", "torch.cuda.Event", "torch.cuda.Event.record", "torch.cuda.Event.elapsed_time",
)
WATCHED_MODULE_PREFIXES = ("tilekit",)


def _lookup(dotted: str):
    module_name, _, rest = dotted.partition(".")
    try:
        obj = importlib.import_module(module_name)
    except ImportError:
        return None
    for part in rest.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _code(obj):
    return getattr(obj, "__code__", None)


def _defined_callables(module: types.ModuleType) -> dict[str, object]:
    """Functions and classes defined in ``module`` (not imported into it), and the functions of
    those classes: what a monkeypatch would replace."""
    name = module.__name__
    found: dict[str, object] = {}
    for attr, value in list(vars(module).items()):
        if getattr(value, "__module__", None) != name:
            continue
        if isinstance(value, types.FunctionType):
            found[f"{name}.{attr}"] = value
        elif isinstance(value, type):
            found[f"{name}.{attr}"] = value
            for member, inner in list(vars(value).items()):
                if isinstance(inner, (types.FunctionType, staticmethod, classmethod, property)):
                    found[f"{name}.{attr}.{member}"] = inner
    return found


def tilekit_op_names() -> list[str]:
    import torch
    return sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith(TILEKIT_NAMESPACE + "::"))


def _registration(qualname: str) -> dict:
    """What decides which code runs for ``torch.ops.tilekit.<op>``: the dispatcher's table (each
    kernel with its registration site), the Python op objects, and a custom op's kernels."""
    import torch
    namespace, op = qualname.split("::")
    packet = getattr(getattr(torch.ops, namespace), op.split(".")[0], None)
    state = {"dispatch": torch._C._dispatch_dump(qualname), "packet": packet,
             "packet_op": getattr(packet, "_op", None)}
    if packet is not None:
        for overload in packet.overloads():
            obj = getattr(packet, overload)
            state[f"overload {overload}"] = obj
            state[f"overload {overload} op"] = getattr(obj, "_op", None)
    opdef = _custom_op_defs().get(qualname)
    if opdef is not None:
        state["custom_op"] = opdef
        for key in ("_backend_fns", "_abstract_fn", "_setup_context_fn", "_backward_fn", "_init_fn",
                    "_torch_dispatch_fns", "_vmap_fn", "_autocast_cuda_dtype", "_autocast_cpu_dtype"):
            value = getattr(opdef, key, None)
            state[key] = dict(value) if isinstance(value, dict) else value
    return state


def _custom_op_defs() -> dict:
    try:
        from torch._library import custom_ops
        return dict(getattr(custom_ops, "OPDEFS", {}))
    except ImportError:
        return {}


def _same(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return a is b


class Snapshot:
    """The state to compare; take it before the candidate is imported."""

    def __init__(self):
        self.attributes = {name: _lookup(name) for name in WATCHED_ATTRIBUTES}
        self.codes = {name: _code(obj) for name, obj in self.attributes.items()}
        self.callables: dict[str, object] = {}
        for module_name, module in list(sys.modules.items()):
            if module is not None and module_name.split(".")[0] in WATCHED_MODULE_PREFIXES:
                self.callables.update(_defined_callables(module))
        self.callable_codes = {name: _code(obj) for name, obj in self.callables.items()}
        self.registrations = {name: _registration(name) for name in tilekit_op_names()}

    def changes(self) -> list[str]:
        """What differs now, one line per thing, naming it."""
        found = []
        for name, before in self.attributes.items():
            now = _lookup(name)
            if now is not before or _code(now) is not self.codes[name]:
                found.append(f"{name} was replaced (the timing and scoring machinery must not be patched)")
        for name, before in self.callables.items():
            module_name, _, attr = name.rpartition(".")
            owner = sys.modules.get(module_name)
            if owner is None:                       # a class member: "module.Class.member"
                module_name, _, cls = module_name.rpartition(".")
                owner = getattr(sys.modules.get(module_name), cls, None)
                now = (vars(owner).get(attr) if isinstance(owner, type) else None)
            else:
                now = vars(owner).get(attr)
            if now is not before or _code(now) is not self.callable_codes[name]:
                found.append(f"{name} was replaced or its code changed")
        after_ops = tilekit_op_names()
        for name in sorted(set(after_ops) - set(self.registrations)):
            found.append(f"torch.ops.{name.replace('::', '.')} was registered by the candidate "
                         "(the tilekit namespace belongs to tilekit)")
        for name, before in self.registrations.items():
            if name not in after_ops:
                found.append(f"torch.ops.{name.replace('::', '.')} was removed")
                continue
            now = _registration(name)
            differing = sorted(k for k in before.keys() | now.keys() if not _same(before.get(k), now.get(k)))
            if differing:
                detail = _new_dispatch_lines(before.get("dispatch", ""), now.get("dispatch", ""))
                found.append(f"torch.ops.{name.replace('::', '.')} is no longer tilekit's own: "
                             f"{', '.join(differing)} changed" + (f" ({detail})" if detail else ""))
        return found


def _new_dispatch_lines(before: str, after: str) -> str:
    old = set(before.splitlines())
    return "; ".join(line.strip() for line in after.splitlines() if line not in old and "registered at" in line)
