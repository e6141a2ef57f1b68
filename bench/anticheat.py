"""Static (AST) anti-cheat check of a candidate's source.

The point is that the timed code is the candidate's own kernel, not PyTorch in disguise. The code
checked is ``ModelNew.forward`` and everything it reaches: ``ModelNew`` methods, module-level
functions and lambdas, lambdas and closures stored on ``self`` in ``__init__``, and the methods of
the candidate's own classes; plus the module's top-level statements, which run at import. Rules:

1. a tilekit candidate must call a tilekit op (``torch.ops.tilekit.*``);
2. no ``try``/``except`` (nor ``contextlib.suppress``): a candidate must not fall back to the
   reference when its kernel fails;
3. no ``torch.nn.functional`` / ``F.*``, no matmul-family ops (``@``, ``torch.matmul``, ``mm``,
   ``bmm``, ``einsum``, ``addmm``, ``linear``, ``__matmul__``, ``__rmatmul__``, ...) and no softmax
   ops, whether called as functions, as tensor methods or through ``torch.ops.aten``;
4. no calling ``torch.nn`` layer modules held by the model (``self.proj = nn.Linear(...)``);
5. no use of the reference ``Model`` class and no dynamic lookups (``getattr``, ``eval``,
   ``exec``, ``__import__``, ``importlib``) that would hide any of the above;
6. an **allowlist** under ``--policy strict`` for tilekit candidates: the reachable code may call
   ``torch.ops.tilekit.*`` and allocation, view, shape and dtype/layout ops only. Any other torch
   function or tensor method (``torch.cumsum``, ``x.topk``, ``index_add_``, ``torch.ops.aten.*``)
   is a cheat, and the message names the call. Python operators other than ``@`` cannot be typed
   statically and are allowed;
7. anywhere in the file: no patching of imported modules (``statistics.median = ...``,
   ``torch.mm = ...``) and no ``torch.library`` registration in the ``tilekit`` namespace.

Rules 3, 4 and 6 are about *what computes*: ``--policy kernelbench`` reports them as warnings
(KernelBench only warns when an answer keeps ``nn.Linear``); the others are cheats under either
policy. Names are resolved through the module's imports and simple aliases (``import
torch.nn.functional as F``, ``mm = torch.matmul``, ``self.mm = torch.mm``), so renaming does not get
around the rules. A static check can be defeated by a determined author; ``bench/integrity.py``
checks the run-time side (registrations, timing machinery) in the candidate's own process.
"""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import torch

POLICIES = ("strict", "kernelbench")
COMPUTE, CHEAT = "compute", "cheat"

MATMUL_OPS = frozenset({
    "matmul", "mm", "bmm", "einsum", "addmm", "addbmm", "baddbmm", "addmv", "addr", "mv", "dot",
    "vdot", "inner", "outer", "ger", "tensordot", "chain_matmul", "linear", "bilinear", "_addmm_activation",
    "__matmul__", "__rmatmul__", "__imatmul__",
})
SOFTMAX_OPS = frozenset({"softmax", "log_softmax", "_softmax", "_log_softmax", "softmin"})
FORBIDDEN_OPS = MATMUL_OPS | SOFTMAX_OPS
FORBIDDEN_MODULE_PREFIXES = ("torch.nn.functional.", "torch.linalg.", "torch._C._nn.", "torch.special.softmax",
                             "torch.special.log_softmax")
DYNAMIC_LOOKUPS = frozenset({"getattr", "setattr", "delattr", "eval", "exec", "__import__", "compile", "globals",
                             "vars", "locals", "importlib.import_module", "importlib.reload", "operator.matmul",
                             "operator.imatmul", "operator.attrgetter", "operator.methodcaller"})
TILEKIT_OP_PREFIX = "torch.ops.tilekit."
LIBRARY_PREFIX = "torch.library."
# torch.nn classes that only hold tensors; anything else in torch.nn computes when called.
NN_HOLDERS = frozenset({"Parameter", "ParameterList", "ParameterDict", "Buffer", "ModuleList", "ModuleDict"})
# --policy strict, tilekit candidates: torch functions and tensor methods that only allocate, view,
# reshape, convert or describe. Everything else that computes is the candidate's kernels' job.
ALLOWED_TORCH = frozenset({
    "empty", "empty_like", "empty_strided", "zeros", "zeros_like", "ones", "ones_like", "full", "full_like",
    "arange", "tensor", "as_tensor", "as_strided", "from_numpy", "reshape", "flatten", "unflatten", "squeeze",
    "unsqueeze", "transpose", "permute", "movedim", "moveaxis", "swapaxes", "swapdims", "narrow", "select",
    "split", "tensor_split", "chunk", "unbind", "t", "broadcast_to", "broadcast_shapes", "is_tensor",
    "is_floating_point", "is_complex", "numel", "get_default_dtype", "finfo", "iinfo", "promote_types",
    "result_type", "no_grad", "inference_mode", "enable_grad", "set_grad_enabled", "is_grad_enabled",
})
ALLOWED_TORCH_PREFIXES = (TILEKIT_OP_PREFIX, "torch.cuda.", "torch.backends.", "torch.version.")
ALLOWED_TENSOR_METHODS = frozenset({
    "view", "view_as", "reshape", "reshape_as", "contiguous", "transpose", "permute", "t", "unsqueeze", "squeeze",
    "flatten", "unflatten", "expand", "expand_as", "narrow", "select", "split", "chunk", "unbind", "movedim",
    "swapaxes", "as_strided", "size", "dim", "numel", "nelement", "stride", "storage_offset", "is_contiguous",
    "element_size", "data_ptr", "get_device", "is_floating_point", "is_complex", "to", "float", "half",
    "bfloat16", "double", "int", "long", "short", "bool", "byte", "char", "type", "type_as", "cpu", "cuda",
    "detach", "clone", "copy_", "new_empty", "new_zeros", "new_ones", "new_full", "new_empty_strided",
    "new_tensor", "fill_", "zero_", "requires_grad_", "item", "tolist", "untyped_storage", "dim_order",
})
# Tensor attribute names that are also everyday Python methods.
NOT_TENSOR_METHODS = frozenset({"index", "values", "__class__", "__len__", "__getitem__", "__setitem__",
                                "__init__", "__call__"})
STRICT_HINT = ("under --policy strict a tilekit candidate may call only torch.ops.tilekit.*, allocation, view "
               "and shape ops")


@dataclasses.dataclass
class Verdict:
    violations: list[str]        # cheats: the candidate is scored as incorrect
    warnings: list[str]          # reported only (--policy kernelbench)


def check_candidate(path: Path | str, require_tilekit_op: bool | None = None, policy: str = "strict") -> Verdict:
    """The anti-cheat verdict on a candidate file under ``policy``.

    ``require_tilekit_op`` None means: required when the file imports tilekit."""
    if policy not in POLICIES:
        raise ValueError(f"unknown anti-cheat policy {policy!r} (one of {', '.join(POLICIES)})")
    path = Path(path)
    try:
        source = path.read_text()
    except OSError as exc:
        return Verdict([f"cannot read candidate {path}: {exc}"], [])
    return check_source(source, filename=str(path), require_tilekit_op=require_tilekit_op, policy=policy)


def check_source(source: str, filename: str = "<candidate>", require_tilekit_op: bool | None = None,
                 policy: str = "strict") -> Verdict:
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        return Verdict([f"{filename}: does not parse: line {exc.lineno}: {exc.msg}"], [])
    findings = _Checker(tree, filename).check(require_tilekit_op)
    if policy == "kernelbench":
        return Verdict([m for kind, m in findings if kind == CHEAT], [m for kind, m in findings if kind == COMPUTE])
    return Verdict([m for _, m in findings], [])


def check_candidate_file(path: Path | str, require_tilekit_op: bool | None = None) -> list[str]:
    """Violations under --policy strict (empty list: clean)."""
    return check_candidate(path, require_tilekit_op).violations


def check_candidate_source(source: str, filename: str = "<candidate>",
                           require_tilekit_op: bool | None = None) -> list[str]:
    return check_source(source, filename, require_tilekit_op).violations


def _dotted(node: ast.AST) -> str | None:
    """'a.b.c' for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _torch_object(dotted: str):
    obj = torch
    for part in dotted.split(".")[1:]:
        try:
            obj = getattr(obj, part)
        except Exception:  # noqa: BLE001 - torch.ops namespaces raise on unknown names
            return None
    return obj


def _is_torch_compute(dotted: str) -> bool:
    """A torch function or op (not a class, module, dtype or allowlisted helper)."""
    if not dotted.startswith("torch.") or dotted.startswith(ALLOWED_TORCH_PREFIXES):
        return False
    if dotted.count(".") == 1 and dotted[6:] in ALLOWED_TORCH:
        return False
    if dotted.startswith("torch.Tensor."):
        name = dotted.rsplit(".", 1)[1]
        return name not in ALLOWED_TENSOR_METHODS and callable(getattr(torch.Tensor, name, None))
    if dotted.startswith("torch.ops."):
        return True
    obj = _torch_object(dotted)
    return callable(obj) and not isinstance(obj, type)


def _is_tensor_compute_method(name: str) -> bool:
    if name in ALLOWED_TENSOR_METHODS or name in NOT_TENSOR_METHODS:
        return False
    attr = getattr(torch.Tensor, name, None)
    return attr is not None and callable(attr) and not isinstance(attr, type)


class _Checker:
    def __init__(self, tree: ast.Module, filename: str):
        self.tree = tree
        self.filename = filename
        self.aliases: dict[str, str] = {"torch": "torch"}
        self.imported: set[str] = {"torch"}                     # names bound by imports (modules, functions)
        self.module_functions: dict[str, ast.AST] = {}          # FunctionDef or Lambda
        self.classes: dict[str, ast.ClassDef] = {}
        self.methods: dict[str, ast.FunctionDef] = {}
        self.self_values: dict[str, list[tuple[ast.AST, dict]]] = {}  # "X" -> [(value assigned to self.X, local defs)]
        self.nn_attributes: dict[str, str] = {}     # "self.proj" -> "torch.nn.Linear"
        self.imports_tilekit = False

    # ---- name resolution -------------------------------------------------------------------
    def _add_imports(self, node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "tilekit":
                    self.imports_tilekit = True
                if alias.asname:
                    self.aliases[alias.asname] = alias.name
                    self.imported.add(alias.asname)
                else:
                    root = alias.name.split(".")[0]
                    self.aliases[root] = root
                    self.imported.add(root)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "tilekit":
                self.imports_tilekit = True
            for alias in node.names:
                self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                self.imported.add(alias.asname or alias.name)

    def _add_assignment(self, target: ast.AST, value: ast.AST) -> None:
        name = _dotted(target)
        if name is None:
            return
        resolved = self.resolve(value)
        if resolved is not None:
            self.aliases[name] = resolved
        elif isinstance(value, ast.Call):
            constructed = self.resolve(value.func)
            if constructed and constructed.startswith("torch.nn.") and constructed.count(".") == 2:
                self.nn_attributes[name] = constructed

    def resolve(self, node: ast.AST) -> str | None:
        raw = _dotted(node)
        if raw is None:
            return None
        parts = raw.split(".")
        for i in range(len(parts), 0, -1):
            prefix = ".".join(parts[:i])
            if prefix in self.aliases and self.aliases[prefix] != prefix:
                return ".".join([self.aliases[prefix], *parts[i:]])
        return raw

    def _is_imported_name(self, node: ast.AST) -> bool:
        """Whether an attribute chain starts at an imported module or one of its aliases."""
        while isinstance(node, ast.Attribute):
            node = node.value
        if not isinstance(node, ast.Name):
            return False
        if node.id in self.imported:
            return True
        resolved = self.aliases.get(node.id)
        return resolved is not None and resolved.split(".")[0] in self.imported

    # ---- collection ------------------------------------------------------------------------
    def _collect(self) -> ast.ClassDef | None:
        model_new = None
        for node in self.tree.body:
            self._add_imports(node)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.module_functions[node.name] = node
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(node.value, ast.Lambda) and isinstance(target, ast.Name):
                        self.module_functions[target.id] = node.value
                    else:
                        self._add_assignment(target, node.value)
            elif isinstance(node, ast.ClassDef):
                if node.name == "ModelNew":
                    model_new = node
                else:
                    self.classes[node.name] = node
        if model_new is None:
            return None
        for node in model_new.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.methods[node.name] = node
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self._add_assignment(ast.Attribute(ast.Name("self"), target.id), node.value)
                        self.self_values.setdefault(target.id, []).append((node.value, {}))
        for method in self.methods.values():
            local_defs = {n.name: n for n in ast.walk(method)
                          if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n is not method}
            for node in ast.walk(method):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    self._add_imports(node)
                elif isinstance(node, ast.Assign):
                    for target in node.targets:
                        self._add_assignment(target, node.value)
                        raw = _dotted(target)
                        if raw and raw.startswith("self.") and raw.count(".") == 1:
                            self.self_values.setdefault(raw[5:], []).append((node.value, local_defs))
        return model_new

    def _reachable(self) -> list[tuple[str, ast.AST]]:
        """forward, then everything it references: methods, module functions and lambdas, values
        stored on self that are code (lambdas, closures, partials), the candidate's own classes."""
        order, seen = [], set()
        stack: list[tuple[str, ast.AST]] = [("ModelNew.forward", self.methods["forward"])]
        while stack:
            label, fn = stack.pop()
            if id(fn) in seen:
                continue
            seen.add(id(fn))
            order.append((label, fn))
            called = {id(n.func) for n in ast.walk(fn) if isinstance(n, ast.Call)}
            for node in ast.walk(fn):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                    if node.id in self.module_functions:
                        stack.append((node.id, self.module_functions[node.id]))
                    elif node.id in self.classes:
                        stack += [(f"{node.id}.{m.name}", m) for m in self.classes[node.id].body
                                  if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
                elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                      and node.value.id == "self" and isinstance(node.ctx, ast.Load)):
                    if node.attr in self.methods:
                        stack.append((f"ModelNew.{node.attr}", self.methods[node.attr]))
                    for value, local_defs in self.self_values.get(node.attr, ()):
                        code = self._stored_code(value, local_defs, is_called=id(node) in called)
                        if code is not None:
                            stack.append((f"self.{node.attr} (line {value.lineno})", code))
        return order

    def _stored_code(self, value: ast.AST, local_defs: dict, is_called: bool) -> ast.AST | None:
        """What runs when a value stored on self is used: a lambda, a closure defined in the
        method, a module function, an own class; any other expression when it is called."""
        if isinstance(value, ast.Lambda):
            return value
        if isinstance(value, ast.Name):
            return local_defs.get(value.id) or self.module_functions.get(value.id)
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in self.classes:
            return value.func                     # a Name load: the class's methods are followed
        return value if is_called and isinstance(value, ast.Call) else None

    # ---- rules -----------------------------------------------------------------------------
    def check(self, require_tilekit_op: bool | None) -> list[tuple[str, str]]:
        if self._collect() is None:
            return [(CHEAT, f"{self.filename}: defines no class ModelNew")]
        if "forward" not in self.methods:
            return [(CHEAT, f"{self.filename}: ModelNew defines no forward method")]
        if require_tilekit_op is None:
            require_tilekit_op = self.imports_tilekit
        strict_allowlist = bool(require_tilekit_op)         # warnings only, under --policy kernelbench
        findings: list[tuple[str, str]] = []
        calls_tilekit = False
        for label, fn in self._reachable():
            calls_tilekit |= self._check_code(label, fn, findings, strict_allowlist)
        top_level = [n for n in self.tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                      ast.ClassDef, ast.Import, ast.ImportFrom))
                     and not self._is_alias_statement(n)]
        for node in top_level:
            self._check_code("module level", node, findings, strict_allowlist=False)
        self._check_patches(findings)
        if require_tilekit_op and not calls_tilekit:
            findings.append((CHEAT, f"{self.filename}: ModelNew.forward never calls a tilekit op "
                                    "(torch.ops.tilekit.*)"))
        return _first_per_location(findings)

    def _is_alias_statement(self, node: ast.AST) -> bool:
        """``mm = torch.mm`` or ``f = lambda ...`` at top level: checked where they are used."""
        return (isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets)
                and (isinstance(node.value, ast.Lambda) or _dotted(node.value) is not None))

    def _check_code(self, label: str, fn: ast.AST, findings: list, strict_allowlist: bool) -> bool:
        calls_tilekit = False
        # The allowlist judges whole attribute chains (torch.ops.tilekit.matmul), not their prefixes.
        inner = {id(n.value) for n in ast.walk(fn) if isinstance(n, ast.Attribute)}
        for node in ast.walk(fn):
            where = f"{label} line {getattr(node, 'lineno', '?')}"
            allow_check = strict_allowlist and id(node) not in inner
            if isinstance(node, ast.Call):
                target = self.resolve(node.func) or ""
                if target.startswith(TILEKIT_OP_PREFIX):
                    calls_tilekit = True
                if target in self.nn_attributes:
                    findings.append((COMPUTE, f"{where}: calls torch.nn module {target} "
                                              f"({self.nn_attributes[target]}) instead of a kernel"))
                if target in DYNAMIC_LOOKUPS:
                    findings.append((CHEAT, f"{where}: dynamic lookup {target}() cannot be checked statically"))
                if target in ("contextlib.suppress",):
                    findings.append((CHEAT, f"{where}: contextlib.suppress hides failures (a fallback)"))
            if isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
                findings.append((CHEAT, f"{where}: try/except in forward (falling back to the reference "
                                        "on failure is not allowed)"))
            elif isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, ast.MatMult):
                findings.append((COMPUTE, f"{where}: uses the @ (matmul) operator"))
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                if node.id == "Model":
                    findings.append((CHEAT, f"{where}: uses the reference Model"))
                else:
                    self._check_name(self.resolve(node), where, findings, allow_check)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                resolved = self.resolve(node) or ""
                if resolved.startswith(TILEKIT_OP_PREFIX):
                    continue
                if node.attr in FORBIDDEN_OPS:
                    findings.append((COMPUTE, f"{where}: uses {resolved or '.' + node.attr} "
                                              f"(a {'softmax' if node.attr in SOFTMAX_OPS else 'matmul'} op)"))
                elif self._is_imported_name(node):
                    self._check_name(resolved, where, findings, allow_check)
                elif allow_check and _is_tensor_compute_method(node.attr) and not resolved.startswith("self."):
                    findings.append((COMPUTE, f"{where}: calls the tensor method .{node.attr}() ({STRICT_HINT})"))
        return calls_tilekit

    @staticmethod
    def _check_name(resolved: str | None, where: str, findings: list, strict_allowlist: bool) -> None:
        if not resolved:
            return
        if resolved == "torch.nn.functional" or resolved.startswith(FORBIDDEN_MODULE_PREFIXES):
            findings.append((COMPUTE, f"{where}: uses {resolved} (PyTorch compute, not a kernel)"))
        elif resolved.startswith("torch.") and resolved.rsplit(".", 1)[-1] in FORBIDDEN_OPS:
            findings.append((COMPUTE, f"{where}: uses {resolved}"))
        elif strict_allowlist and _is_torch_compute(resolved):
            findings.append((COMPUTE, f"{where}: calls {resolved} (PyTorch compute; {STRICT_HINT})"))

    def _check_patches(self, findings: list) -> None:
        """Anywhere in the file: assignments into imported modules, tilekit registrations."""
        for node in ast.walk(self.tree):
            targets = (node.targets if isinstance(node, ast.Assign) else
                       [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
            for target in targets:
                for leaf in ast.walk(target):
                    if (isinstance(leaf, (ast.Attribute, ast.Subscript)) and isinstance(leaf.ctx, ast.Store)
                            and self._is_imported_name(leaf.value if isinstance(leaf, ast.Subscript) else leaf)):
                        name = self.resolve(leaf.value if isinstance(leaf, ast.Subscript) else leaf) or "?"
                        findings.append((CHEAT, f"line {node.lineno}: patches {name}, which belongs to another "
                                                "module (the timing, scoring and tilekit's ops must stay as they are)"))
            if isinstance(node, ast.Call):
                target = self.resolve(node.func) or ""
                strings = [a.value for a in ast.walk(node) if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                registers = target.startswith(LIBRARY_PREFIX) or (isinstance(node.func, ast.Attribute)
                                                                  and node.func.attr in ("impl", "py_impl"))
                if registers and any("tilekit" in s for s in strings):
                    findings.append((CHEAT, f"line {node.lineno}: registers a kernel in the tilekit namespace "
                                            f"({target or node.func.attr}); tilekit's ops belong to tilekit"))


def _first_per_location(findings: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One message per source location: the outermost node (visited first) names the most."""
    kept, seen = [], set()
    for kind, message in findings:
        location = message.split(": ", 1)[0]
        if location not in seen:
            seen.add(location)
            kept.append((kind, message))
    return kept
