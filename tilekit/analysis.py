"""Small facts found by analysis: about IR values (emitters use them to drop needless work) and about a
kernel's source (how it uses its parameters, which launches check before anything compiles)."""
from __future__ import annotations

import ast
from fractions import Fraction

from .ir import Function, walk
from .jit import JitFunction
from .language import Builtin, all_builtins
from .optable import BINARY, Trait, has

# Names of the builtins whose first argument is a tensor (for callees the source names but that do not
# resolve, e.g. ``tk`` imported under another name inside a helper module).
_TENSOR_BUILTINS = frozenset(n for n, b in all_builtins().items() if b.reads_tensor)


def loop_owners(fn: Function) -> dict:
    """Map each ``for`` body's induction variable to its ``for`` op."""
    out = {}
    for op in walk(fn.body):
        if op.name == "for":
            out[op.regions[0].args[0]] = op
    return out


def is_nonnegative(v, owners: dict, depth=0) -> bool:
    """True when ``v`` is provably >= 0 (so an edge mask needs no lower-bound check)."""
    if depth > 24:
        return False
    op = v.owner
    if op is None:
        loop = owners.get(v)
        if loop is not None:
            start, _, step = loop.operands[:3]
            return is_nonnegative(start, owners, depth + 1) and is_nonnegative(step, owners, depth + 1)
        return False
    n = op.name
    if n == "const":
        return op.attrs["value"] >= 0
    if n in ("program_id", "num_programs", "dim", "arange"):
        return True
    if n == "binary" and BINARY[op.attrs["op"]].nonneg:
        a, b = op.operands
        if op.attrs["op"] == "maximum":
            return is_nonnegative(a, owners, depth + 1) or is_nonnegative(b, owners, depth + 1)
        return is_nonnegative(a, owners, depth + 1) and is_nonnegative(b, owners, depth + 1)
    if n in ("cast", "broadcast", "expand_dims"):
        return op.operands[0].dtype.is_int and is_nonnegative(op.operands[0], owners, depth + 1)
    if n == "where":  # ``0 if lo < 0 else lo`` (a select): each side >= 0, or chosen only when it is
        cond, t, f = op.operands
        return all(is_nonnegative(y, owners, depth + 1) or _branch_proves_nonnegative(cond, y, taken)
                   for y, taken in ((t, True), (f, False)))
    if n == "if":  # a result is >= 0 when every branch yields a value >= 0 (``if lo < 0: lo = 0``)
        i = op.results.index(v)
        return all(is_nonnegative(y, owners, depth + 1) or _branch_proves_nonnegative(op.operands[0], y, taken)
                   for r, taken in zip(op.regions, (True, False)) for y in [r.terminator.operands[i]])
    return False


def _const_value(v):
    return v.owner.attrs["value"] if v.owner is not None and v.owner.name == "const" else None


def _branch_proves_nonnegative(cond, y, taken) -> bool:
    """Whether the branch taken when ``cond`` is ``taken`` only runs with ``y >= 0``: the else of ``y < c``
    or ``y <= c`` with c >= 0, the then of ``y >= c`` or ``y > c`` with c >= 0 (also ``c > y`` and the like)."""
    op = cond.owner
    if op is None or op.name != "cmp" or cond.shape != ():
        return False
    a, b = op.operands
    k = op.attrs["op"]
    flip = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}
    if b is y and a is not y:
        a, b, k = b, a, flip.get(k, k)
    c = _const_value(b)
    if a is not y or c is None or c < 0:
        return False
    return (k in ("lt", "le") and not taken) or (k in ("gt", "ge") and taken)


def mask_row_bounds(mask, rank: int) -> list:
    """The conjuncts of a tile mask that bound one tile dimension: ``(axis, base, X, n)`` for each
    ``(base + arange(n)) < X`` (scalar ``base`` and ``X``; also ``X > ...`` and a bare ``arange``) that
    varies along tile dimension ``axis`` only and is and-ed into ``mask`` (rank ``rank``)."""
    out = []

    def visit(v, axes, depth=0):
        op = v.owner
        if op is None or depth > 24:
            return
        if op.name == "binary" and op.attrs["op"] == "and":
            for u in op.operands:  # implicit broadcasting aligns shapes on the right
                visit(u, axes[len(axes) - len(u.shape):], depth + 1)
        elif op.name == "broadcast":
            u = op.operands[0]
            visit(u, axes[len(axes) - len(u.shape):], depth + 1)
        elif op.name == "expand_dims":
            visit(op.operands[0], axes[:op.attrs["axis"]] + axes[op.attrs["axis"] + 1:], depth + 1)
        elif op.name == "cmp" and op.attrs["op"] in ("lt", "gt"):
            rows, limit = op.operands if op.attrs["op"] == "lt" else op.operands[::-1]
            if limit.shape != () or len(rows.shape) != len(axes):
                return
            axes_of_rows = axes
            while rows.owner is not None and rows.owner.name in ("expand_dims", "broadcast"):
                inner = rows.owner.operands[0]
                if rows.owner.name == "expand_dims":
                    a = rows.owner.attrs["axis"]
                    axes_of_rows = axes_of_rows[:a] + axes_of_rows[a + 1:]
                else:
                    axes_of_rows = axes_of_rows[len(axes_of_rows) - len(inner.shape):]
                rows = inner
            if len(rows.shape) != 1:
                return
            base = _arange_base(rows)
            if base is not None:
                out.append((axes_of_rows[0], base, limit, rows.shape[0]))

    visit(mask, list(range(rank)))
    return out


def _arange_base(v):
    """``base`` of a 1-D ``base + arange(n)`` (``0`` for a bare arange), or None."""
    op = v.owner
    if op is not None and op.name == "arange":
        return 0
    if op is not None and op.name == "binary" and op.attrs["op"] == "add":
        a, b = op.operands
        if b.owner is not None and b.owner.name == "arange" and a.shape == ():
            return a
        if a.owner is not None and a.owner.name == "arange" and b.shape == ():
            return b
    return None


def implies_row_bound(conjuncts, axis: int, offset, n: int, tensor) -> bool:
    """Whether one of ``mask_row_bounds``'s conjuncts proves ``offset + arange(n) < tensor.shape[axis]``,
    so the tile's edge mask need not test it: ``(base + arange(n)) < X`` with ``offset = base + c`` and
    ``c + X <= shape`` (e.g. ``F + n0`` under ``n0 + j < F`` where ``F = shape // 2``)."""
    for a, base, limit, m in conjuncts:
        if a != axis or m != n:
            continue
        rest = _minus_term(offset, base)
        if rest is None:
            continue
        bound = _linear(limit)
        extra = ({}, 0) if isinstance(rest, int) else _linear(rest)
        if bound is None or extra is None:
            continue
        terms = dict(bound[0])
        for k, c in extra[0].items():
            terms[k] = terms.get(k, 0) + c
        if _at_most_dim(terms, bound[1] + extra[1], tensor, axis):
            return True
    return False


def _minus_term(offset, base):
    """``offset - base`` when ``offset`` is ``base`` (0) or ``base + c`` / ``c + base`` (c), else None."""
    if isinstance(base, int):
        return offset
    if offset is base:
        return 0
    op = offset.owner
    if op is not None and op.name == "binary" and op.attrs["op"] == "add":
        a, b = op.operands
        if a is base:
            return b
        if b is base:
            return a
    return None


def _linear(v, depth=0):
    """An int scalar as ({atom: coefficient}, constant), atoms being ``("dim", tensor, axis)``,
    ``("div", atom, k)`` (``atom // k``, k > 0) and opaque values; None past what it can follow."""
    if depth > 16:
        return None
    op = v.owner
    if op is None:
        return {v: 1}, 0
    if op.name == "const":
        x = op.attrs["value"]
        return ({}, x) if isinstance(x, int) and not isinstance(x, bool) else None
    if op.name == "dim":
        return {("dim", op.operands[0], op.attrs["axis"]): 1}, 0
    if op.name == "binary" and op.attrs["op"] in ("add", "sub", "mul", "floordiv"):
        a, b = (_linear(u, depth + 1) for u in op.operands)
        if a is None or b is None:
            return None
        k = op.attrs["op"]
        if k in ("add", "sub"):
            sign = 1 if k == "add" else -1
            terms = dict(a[0])
            for t, c in b[0].items():
                terms[t] = terms.get(t, 0) + sign * c
            return terms, a[1] + sign * b[1]
        if k == "mul" and not b[0]:
            return {t: c * b[1] for t, c in a[0].items()}, a[1] * b[1]
        if k == "mul" and not a[0]:
            return {t: c * a[1] for t, c in b[0].items()}, a[1] * b[1]
        if k == "floordiv" and not b[0] and b[1] > 0 and a[1] == 0 and len(a[0]) == 1:
            (t, c), = a[0].items()
            if c == 1:
                return {("div", t, b[1]): 1}, 0
        return None
    return {v: 1}, 0


def _at_most_dim(terms, const, tensor, axis) -> bool:
    """Whether Σ terms + const <= tensor.shape[axis] for every size >= 0: each ``shape // k`` counts as at
    most shape / k (so only with a coefficient >= 0), and nothing else may remain."""
    dim = ("dim", tensor, axis)
    share = Fraction(0)
    for t, c in terms.items():
        if c == 0:
            continue
        if isinstance(t, tuple) and t[0] == "dim" and t[1] is tensor and t[2] == axis:
            share += c
        elif isinstance(t, tuple) and t[0] == "div" and t[1] == dim and c > 0:
            share += Fraction(c, t[2])
        else:
            return False
    return share <= 1 and const <= 0


def known_multiple(v, owners: dict, depth=0) -> int:
    """A power of two that provably divides the integer scalar ``v`` (1 when nothing is known, up to 2**20).
    Packed loads use it to see that a tile starts on a word (``pid * 64`` of int3 codes is 192 bits)."""
    cap = 1 << 20
    if depth > 24:
        return 1
    op = v.owner
    if op is None:
        loop = owners.get(v)
        if loop is not None:
            start, _, step = loop.operands[:3]
            return min(known_multiple(start, owners, depth + 1), known_multiple(step, owners, depth + 1))
        return 1
    n = op.name
    if n == "const":
        x = int(op.attrs["value"]) if op.attrs["dtype"].is_int else 0
        return cap if x == 0 else min(cap, x & -x)
    if n == "binary":
        a, b = (known_multiple(o, owners, depth + 1) for o in op.operands)
        k = op.attrs["op"]
        if k in ("add", "sub"):
            return min(a, b)
        if k == "mul":
            return min(cap, a * b)
        if k == "shl" and op.operands[1].owner is not None and op.operands[1].owner.name == "const":
            return min(cap, a << max(0, min(20, int(op.operands[1].owner.attrs["value"]))))
        return 1
    if n == "cast" and op.operands[0].dtype.is_int:
        return known_multiple(op.operands[0], owners, depth + 1)
    return 1


# ---- parameter uses, from the source (before any IR exists) -------------------------------------------

def _resolve(node, env):
    """The object a callee expression (a name or a dotted name) refers to in ``env``, else None."""
    if isinstance(node, ast.Name):
        return env.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, env)
        return getattr(base, node.attr, None) if base is not None else None
    return None


def param_uses(fn_node, names, env, seen=()):
    """(tensor uses, scalar uses): the parameters in ``names`` that a kernel or @tk.func body reads or
    writes as tensors (first argument of a builtin that reads a tensor -- tk.load, tk.store, tk.atomic_* --,
    ``.shape``/``.ndim``, indexing,
    or passed to a @tk.func that does so) and those it uses any other way. Found syntactically, so
    launches can check argument kinds before anything compiles."""
    tensor, claimed = set(), set()
    for node in ast.walk(fn_node):
        if isinstance(node, ast.Call):
            callee = _resolve(node.func, env)
            cname = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            is_memory = callee.reads_tensor if isinstance(callee, Builtin) else \
                (callee is None and cname in _TENSOR_BUILTINS)
            if is_memory and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in names:
                tensor.add(node.args[0].id)
                claimed.add(id(node.args[0]))
            elif not isinstance(callee, (Builtin, JitFunction)):
                # not a tk builtin: a Python call the front end judges; it names what is wrong with a tensor there
                claimed.update(id(a) for a in node.args if isinstance(a, ast.Name))
            elif isinstance(callee, JitFunction) and callee not in seen:
                try:
                    bound = callee.signature.bind_partial(*node.args, **{k.arg: k.value for k in node.keywords
                                                                        if k.arg is not None})
                except TypeError:
                    continue  # the front end reports the bad call
                inner = {p: a.id for p, a in bound.arguments.items() if isinstance(a, ast.Name) and a.id in names}
                if not inner:
                    continue
                sub_tensor, sub_scalar = param_uses(callee.source_info().node, set(inner), callee.fn.__globals__,
                                                     seen + (callee,))
                for p, outer in inner.items():
                    if p in sub_tensor:
                        tensor.add(outer)
                    if p not in sub_scalar:
                        claimed.update(id(a) for a in bound.arguments.values() if isinstance(a, ast.Name)
                                       and a.id == outer)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in names \
                and node.attr in ("shape", "ndim"):
            tensor.add(node.value.id)
            claimed.add(id(node.value))
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in names:
            tensor.add(node.value.id)  # a wrong use of a tensor: the front end says how to read it
            claimed.add(id(node.value))
    scalar = {n.id for n in ast.walk(fn_node) if isinstance(n, ast.Name) and n.id in names
              and isinstance(n.ctx, ast.Load) and id(n) not in claimed}
    return tensor, scalar


class _CellScope:
    """A closure cell seen as a one-name scope, so helper probes treat closures and globals alike."""
    __slots__ = ("cell",)

    def __init__(self, cell):
        self.cell = cell

    def get(self, name, default=None):
        try:
            return self.cell.cell_contents
        except ValueError:  # an empty cell
            return default


def reached_helpers(fn, node):
    """(helpers, probes) of a kernel: every @tk.func its body reaches by name (called, or passed as a
    scan's combiner), transitively through the helpers' own bodies; and a (scope, name, object) probe
    for each name on the way, so a launch can tell cheaply that one now holds something else."""
    helpers, probes, seen = [], [], set()

    def visit(fn, node):
        free = fn.__code__.co_freevars
        cells = {n: _CellScope(c) for n, c in zip(free, fn.__closure__ or ())}

        def lookup(name):
            scope = cells.get(name) or fn.__globals__
            return scope, scope.get(name)

        def resolve(expr, chain):
            if isinstance(expr, ast.Name):
                scope, obj = lookup(expr.id)
                chain.append((scope, expr.id, obj))
                return obj
            if isinstance(expr, ast.Attribute):
                base = resolve(expr.value, chain)
                obj = getattr(base, expr.attr, None) if base is not None else None
                scope = getattr(base, "__dict__", None)
                if scope is not None and hasattr(scope, "get"):
                    chain.append((scope, expr.attr, obj))
                return obj
            return None

        for n in ast.walk(node):
            if not isinstance(n, (ast.Name, ast.Attribute)) or not isinstance(n.ctx, ast.Load):
                continue
            chain = []
            obj = resolve(n, chain)
            if isinstance(obj, JitFunction):
                probes.extend(chain)
                if id(obj) not in seen:
                    seen.add(id(obj))
                    helpers.append(obj)
                    visit(obj.fn, obj.source_info().node)

    visit(fn, node)
    unique = {(id(s), n): (s, n, o) for s, n, o in probes}
    return helpers, tuple(unique.values())


def written_params(fn) -> tuple:
    """Names of the tensor parameters the compiled IR ``fn`` stores into (the outputs)."""
    targets = {id(op.operands[0]) for op in walk(fn.body) if has(op.name, Trait.WRITES_MEMORY)}
    return tuple(p.name for p in fn.params if p.kind == "tensor" and id(p.value) in targets)
