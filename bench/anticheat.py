"""Static (AST) anti-cheat check of a candidate's ``ModelNew.forward``.

The point is that the timed code is the candidate's own kernel, not PyTorch in disguise. The rules,
applied to ``forward`` and to every method of ``ModelNew`` and module-level function it calls:

1. a tilekit candidate must call a tilekit op (``torch.ops.tilekit.*``);
2. no ``try``/``except`` (nor ``contextlib.suppress``): a candidate must not fall back to the
   reference when its kernel fails;
3. no ``torch.nn.functional`` / ``F.*``, no matmul-family ops (``@``, ``torch.matmul``, ``mm``,
   ``bmm``, ``einsum``, ``addmm``, ``linear``, ...) and no softmax ops, whether called as
   functions, as tensor methods or through ``torch.ops.aten``;
4. no calling ``torch.nn`` layer modules held by the model (``self.proj = nn.Linear(...)``);
5. no use of the reference ``Model`` class and no dynamic lookups (``getattr``, ``eval``,
   ``exec``, ``__import__``, ``importlib``) that would hide any of the above.

Names are resolved through the module's imports and simple aliases (``import torch.nn.functional
as F``, ``mm = torch.matmul``, ``self.mm = torch.mm``), so renaming does not get around the rules.
A static check can be defeated by a determined author; it exists to catch the common shortcuts.
"""
from __future__ import annotations

import ast
from pathlib import Path

MATMUL_OPS = frozenset({
    "matmul", "mm", "bmm", "einsum", "addmm", "addbmm", "baddbmm", "addmv", "addr", "mv", "dot",
    "vdot", "inner", "outer", "ger", "tensordot", "chain_matmul", "linear", "bilinear", "_addmm_activation",
})
SOFTMAX_OPS = frozenset({"softmax", "log_softmax", "_softmax", "_log_softmax", "softmin"})
FORBIDDEN_OPS = MATMUL_OPS | SOFTMAX_OPS
FORBIDDEN_MODULE_PREFIXES = ("torch.nn.functional.", "torch.linalg.", "torch._C._nn.", "torch.special.softmax",
                             "torch.special.log_softmax")
DYNAMIC_LOOKUPS = frozenset({"getattr", "eval", "exec", "__import__", "compile", "globals", "vars",
                             "importlib.import_module", "operator.matmul", "operator.imatmul"})
TILEKIT_OP_PREFIX = "torch.ops.tilekit."
# torch.nn classes that only hold tensors; anything else in torch.nn computes when called.
NN_HOLDERS = frozenset({"Parameter", "ParameterList", "ParameterDict", "Buffer", "ModuleList", "ModuleDict"})


def check_candidate_file(path: Path | str, require_tilekit_op: bool | None = None) -> list[str]:
    """Violations in a candidate file (empty list: clean).

    ``require_tilekit_op`` None means: required when the file imports tilekit.
    """
    path = Path(path)
    try:
        source = path.read_text()
    except OSError as exc:
        return [f"cannot read candidate {path}: {exc}"]
    return check_candidate_source(source, filename=str(path), require_tilekit_op=require_tilekit_op)


def check_candidate_source(source: str, filename: str = "<candidate>",
                           require_tilekit_op: bool | None = None) -> list[str]:
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        return [f"{filename}: does not parse: line {exc.lineno}: {exc.msg}"]
    return _Checker(tree, filename).check(require_tilekit_op)


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


class _Checker:
    def __init__(self, tree: ast.Module, filename: str):
        self.tree = tree
        self.filename = filename
        self.aliases: dict[str, str] = {"torch": "torch"}
        self.module_functions: dict[str, ast.FunctionDef] = {}
        self.methods: dict[str, ast.FunctionDef] = {}
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
                else:
                    root = alias.name.split(".")[0]
                    self.aliases[root] = root
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "tilekit":
                self.imports_tilekit = True
            for alias in node.names:
                self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"

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

    # ---- collection ------------------------------------------------------------------------
    def _collect(self) -> ast.ClassDef | None:
        model_new = None
        for node in self.tree.body:
            self._add_imports(node)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.module_functions[node.name] = node
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    self._add_assignment(target, node.value)
            elif isinstance(node, ast.ClassDef) and node.name == "ModelNew":
                model_new = node
        if model_new is None:
            return None
        for node in model_new.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.methods[node.name] = node
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self._add_assignment(ast.Attribute(ast.Name("self"), target.id), node.value)
        for method in self.methods.values():
            for node in ast.walk(method):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    self._add_imports(node)
                elif isinstance(node, ast.Assign):
                    for target in node.targets:
                        self._add_assignment(target, node.value)
        return model_new

    def _reachable_functions(self) -> list[tuple[str, ast.FunctionDef]]:
        """forward, then every ModelNew method / module function it (transitively) calls."""
        order, seen = [], set()
        stack = [("ModelNew.forward", self.methods["forward"])]
        while stack:
            label, fn = stack.pop()
            if label in seen:
                continue
            seen.add(label)
            order.append((label, fn))
            for node in ast.walk(fn):
                if not isinstance(node, ast.Call):
                    continue
                raw = _dotted(node.func)
                if raw and raw.startswith("self.") and raw.count(".") == 1 and raw[5:] in self.methods:
                    stack.append((f"ModelNew.{raw[5:]}", self.methods[raw[5:]]))
                elif raw in self.module_functions:
                    stack.append((raw, self.module_functions[raw]))
        return order

    # ---- rules -----------------------------------------------------------------------------
    def check(self, require_tilekit_op: bool | None) -> list[str]:
        if self._collect() is None:
            return [f"{self.filename}: defines no class ModelNew"]
        if "forward" not in self.methods:
            return [f"{self.filename}: ModelNew defines no forward method"]
        if require_tilekit_op is None:
            require_tilekit_op = self.imports_tilekit
        violations: list[str] = []
        calls_tilekit = False
        for label, fn in self._reachable_functions():
            for node in ast.walk(fn):
                where = f"{label} line {getattr(node, 'lineno', '?')}"
                if isinstance(node, ast.Call):
                    target = self.resolve(node.func) or ""
                    if target.startswith(TILEKIT_OP_PREFIX):
                        calls_tilekit = True
                    if target in self.nn_attributes:
                        violations.append(f"{where}: calls torch.nn module {target} "
                                          f"({self.nn_attributes[target]}) instead of a kernel")
                    if target in DYNAMIC_LOOKUPS:
                        violations.append(f"{where}: dynamic lookup {target}() cannot be checked statically")
                    if target in ("contextlib.suppress",):
                        violations.append(f"{where}: contextlib.suppress hides failures (a fallback)")
                if isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
                    violations.append(f"{where}: try/except in forward (falling back to the reference "
                                      "on failure is not allowed)")
                elif isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, ast.MatMult):
                    violations.append(f"{where}: uses the @ (matmul) operator")
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                    if node.id == "Model":
                        violations.append(f"{where}: uses the reference Model")
                    else:
                        self._check_name(self.resolve(node), where, violations)
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                    resolved = self.resolve(node) or ""
                    if resolved.startswith(TILEKIT_OP_PREFIX):
                        continue
                    if node.attr in FORBIDDEN_OPS:
                        violations.append(f"{where}: uses {resolved or '.' + node.attr} "
                                          f"(a {'softmax' if node.attr in SOFTMAX_OPS else 'matmul'} op)")
                    else:
                        self._check_name(resolved, where, violations)
        if require_tilekit_op and not calls_tilekit:
            violations.append(f"{self.filename}: ModelNew.forward never calls a tilekit op (torch.ops.tilekit.*)")
        return _first_per_location(violations)

    @staticmethod
    def _check_name(resolved: str | None, where: str, violations: list[str]) -> None:
        if not resolved:
            return
        if resolved == "torch.nn.functional" or resolved.startswith(FORBIDDEN_MODULE_PREFIXES):
            violations.append(f"{where}: uses {resolved} (PyTorch compute, not a kernel)")
        elif resolved.startswith("torch.") and resolved.rsplit(".", 1)[-1] in FORBIDDEN_OPS:
            violations.append(f"{where}: uses {resolved}")


def _first_per_location(violations: list[str]) -> list[str]:
    """One message per source location: the outermost node (visited first) names the most."""
    kept, seen = [], set()
    for message in violations:
        location = message.split(": ", 1)[0]
        if location not in seen:
            seen.add(location)
            kept.append(message)
    return kept
