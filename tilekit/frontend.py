"""Python AST -> Tile IR.

The kernel's source is parsed with ``ast`` (never run). Compile-time values (constexprs, literals,
dtypes) stay Python objects and fold as Python; anything runtime becomes an IR ``Value`` built through
:mod:`tilekit.semantic`. Loops and runtime ``if``\\s become region ops whose loop-carried values and
results are the variables the body rebinds.
"""
from __future__ import annotations

import ast
import builtins
import inspect
import operator

from . import dtypes as D
from . import language as L
from . import semantic as S
from .errors import CompileError
from .ir import Block, Function, Param, TensorType, TileType, Value
from .jit import JitFunction, KernelObject, SourceInfo  # noqa: F401  (SourceInfo: re-exported)

_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.FloorDiv: "floordiv",
           ast.Mod: "mod", ast.Pow: "pow", ast.BitAnd: "and", ast.BitOr: "or", ast.BitXor: "xor",
           ast.LShift: "shl", ast.RShift: "shr"}
_PYOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
          ast.BitAnd: operator.and_, ast.BitOr: operator.or_, ast.BitXor: operator.xor,
          ast.LShift: operator.lshift, ast.RShift: operator.rshift, ast.MatMult: operator.matmul}
_CMPOPS = {ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge", ast.Eq: "eq", ast.NotEq: "ne"}
_PYCMP = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
          ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Is: operator.is_, ast.IsNot: operator.is_not}

_UNSUPPORTED_STMT = {
    ast.While: "while loops are not supported; use `for i in tk.range(start, stop, step)`",
    ast.With: "`with` blocks are not supported in kernels",
    ast.Try: "try/except is not supported in kernels",
    ast.Raise: "raise is not supported in kernels; use tk.static_assert for compile-time checks",
    ast.Global: "global is not supported in kernels",
    ast.Nonlocal: "nonlocal is not supported in kernels",
    ast.Delete: "del is not supported in kernels",
    ast.Import: "import inside a kernel is not supported; import at module level",
    ast.ImportFrom: "import inside a kernel is not supported; import at module level",
    ast.FunctionDef: "nested function definitions are not supported; define a @tk.func at module level",
    ast.ClassDef: "class definitions are not supported in kernels",
    ast.Break: "break is not supported; loops run their full range (use a mask or tk.where)",
    ast.Continue: "continue is not supported; use a mask or tk.where",
    ast.AsyncFunctionDef: "async code is not supported in kernels",
}


class _Return(Exception):
    def __init__(self, value):
        self.value = value


class BoundMethod:
    def __init__(self, name, target):
        self.name, self.target = name, target


def _same_binding(a, b):
    """Whether a loop body left a non-carried name bound to what it was (a compile-time value)."""
    if a is b:
        return True
    if isinstance(a, Value) or isinstance(b, Value) or type(a) is not type(b):
        return False
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same_binding(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:
        return False


def _assigned_names(stmts):
    names = []
    for st in stmts:
        for node in ast.walk(st):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id not in names:
                names.append(node.id)
    return names


def _written_before_read(stmts, name):
    """True when every iteration of ``stmts`` (a loop body) assigns ``name`` in a plain top-level assignment
    before anything reads it: its value never flows from one iteration to the next (a discard like ``_``)."""
    mentions = lambda n: any(isinstance(x, ast.Name) and x.id == name for x in ast.walk(n))
    for st in stmts:
        if isinstance(st, ast.Assign):
            if mentions(st.value):
                return False
            if any(mentions(t) for t in st.targets):
                return True
        elif mentions(st):
            return False
    return False


class CodeGen:
    """Visits one function body (a kernel, or an inlined @tk.func) building IR into ``builder``."""

    def __init__(self, builder: S.Builder, info: SourceInfo, env: dict, depth=0):
        self.b = builder
        self.info = info
        self.env = env
        self.depth = depth
        self.loop_locals = {}

    # -- errors and locations --
    def error(self, node, message):
        loc = self.info.loc(node)
        return CompileError(message, loc.filename, loc.lineno, loc.line)

    def at(self, node):
        self.b.loc = self.info.loc(node)

    # -- statements --
    def visit_body(self, stmts):
        for st in stmts:
            self.visit_stmt(st)

    def visit_stmt(self, node):
        self.at(node)
        for cls, msg in _UNSUPPORTED_STMT.items():
            if isinstance(node, cls):
                raise self.error(node, msg)
        method = getattr(self, "stmt_" + type(node).__name__, None)
        if method is None:
            raise self.error(node, f"{type(node).__name__} statements are not supported in kernels")
        method(node)

    def stmt_Pass(self, node):
        pass

    def stmt_Expr(self, node):
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return  # docstring
        self.eval(node.value)

    def stmt_Assign(self, node):
        value = self.eval(node.value)
        for target in node.targets:
            self.assign(target, value)

    def stmt_AnnAssign(self, node):
        if node.value is None:
            raise self.error(node, "a bare annotation assigns nothing")
        self.assign(node.target, self.eval(node.value))

    def stmt_AugAssign(self, node):
        if not isinstance(node.target, ast.Name):
            raise self.error(node, "augmented assignment works on plain names only (no x[i] += ...)")
        cur = self.lookup(node.target.id, node.target)
        self.assign(node.target, self.binop(node, type(node.op), cur, self.eval(node.value)))

    def assign(self, target, value):
        if isinstance(target, ast.Name):
            if isinstance(value, Value) and value.name is None:
                value.name = target.id
            self.env[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            if not isinstance(value, (tuple, list)):
                raise self.error(target, f"cannot unpack {self.describe(value)} into {len(target.elts)} names")
            if len(value) != len(target.elts):
                raise self.error(target, f"cannot unpack {len(value)} values into {len(target.elts)} names")
            for t, v in zip(target.elts, value):
                self.assign(t, v)
        elif isinstance(target, ast.Subscript):
            raise self.error(target, "item assignment (x[i] = ...) is not supported: tiles are immutable values; "
                                     "use tk.where to build a new tile, or tk.store to write memory")
        elif isinstance(target, ast.Attribute):
            raise self.error(target, "attribute assignment is not supported in kernels")
        else:
            raise self.error(target, f"cannot assign to {type(target).__name__}")

    def stmt_Assert(self, node):
        cond = self.eval(node.test)
        if isinstance(cond, Value):
            raise self.error(node, "assert in a kernel must be on a compile-time value (runtime asserts are not supported)")
        if not cond:
            msg = self.eval(node.msg) if node.msg else "assertion failed"
            raise self.error(node, f"compile-time assertion failed: {msg}")

    def stmt_Return(self, node):
        raise _Return(self.eval(node.value) if node.value is not None else None)

    def stmt_If(self, node):
        cond = self.eval(node.test)
        if not isinstance(cond, Value):
            self.visit_body(node.body if cond else node.orelse)
            return
        if cond.shape != ():
            raise self.error(node.test, f"`if` on a {cond.type} tile: a runtime `if` needs a scalar condition; "
                                        f"use tk.where for elementwise choice")
        if not cond.dtype.is_bool:
            cond = S.binary(self.b, "ne", cond, 0)
        self.runtime_if(node, cond)

    def _run_branch(self, stmts, env):
        block = Block()
        saved_env = self.env
        self.env = dict(env)
        self.b.push(block)
        try:
            self.visit_body(stmts)
        except _Return:
            raise self.error(stmts[0], "return inside a runtime `if` is not supported; assign a variable instead")
        finally:
            self.b.pop()
        out_env, self.env = self.env, saved_env
        return block, out_env

    def runtime_if(self, node, cond):
        before = self.env
        then_block, then_env = self._run_branch(node.body, before)
        else_block, else_env = self._run_branch(node.orelse, before)
        names = [n for n in _assigned_names(node.body + node.orelse)
                 if n in then_env and n in else_env and not (then_env[n] is else_env[n])]
        results_then, results_else, types = [], [], []
        for n in names:
            tv, ev = then_env[n], else_env[n]
            tv, ev = self.unify(node, n, tv, ev, then_block, else_block)
            results_then.append(tv)
            results_else.append(ev)
            types.append(tv.type)
        self.at(node)
        for block, vals in ((then_block, results_then), (else_block, results_else)):
            self.b.push(block)
            self.b.create("yield", vals)
            self.b.pop()
        op = self.b.create("if", [cond], {"result_types": tuple(types)}, [then_block, else_block])
        for n, r in zip(names, op.results):
            r.name = n
            self.env[n] = r
        for n in set(_assigned_names(node.body + node.orelse)) - set(names):
            if n not in before:
                self.loop_locals[n] = "assigned in only one branch of a runtime `if`; define it before the loop/branch"

    def unify(self, node, name, a, b_, block_a, block_b):
        """Make two branch values of ``name`` the same IR type, materialising constants."""
        def materialise(v, block, like):
            self.b.push(block)
            try:
                if isinstance(v, Value):
                    out = v
                else:
                    out = S.to_value(self.b, v, like.dtype if isinstance(like, (Value, TileType)) else None)
                if isinstance(like, (Value, TileType)):
                    if out.dtype is not like.dtype:
                        out = S.cast(self.b, out, like.dtype)
                    if out.shape != like.shape:
                        out = S.broadcast_to(self.b, out, like.shape)
                return out
            finally:
                self.b.pop()
        if isinstance(a, (S.TensorRef, tuple)) or isinstance(b_, (S.TensorRef, tuple)):
            raise self.error(node, f"'{name}' is bound to different non-tile values in the two branches")
        like = a if isinstance(a, Value) else b_ if isinstance(b_, Value) else None
        if isinstance(a, Value) and isinstance(b_, Value) and a.type != b_.type:
            # Two tiles: the same shape (or a scalar beside a tile), and the dtype both promote to; never
            # the first branch's dtype, which would silently truncate the other branch's value.
            if a.shape != b_.shape and () not in (a.shape, b_.shape):
                raise self.error(node, f"'{name}' is {a.type} in one branch and {b_.type} in the other; "
                                       f"both branches must give it the same shape and dtype")
            dt = S.promote(a.dtype, b_.dtype)
            like = TileType(a.shape if a.shape else b_.shape, dt)
        elif like is None and S.python_dtype(a) is not None and S.python_dtype(b_) is not None:
            like = TileType((), S.promote(S.python_dtype(a), S.python_dtype(b_)))  # e.g. 0 and 0.5
        va, vb = materialise(a, block_a, like), materialise(b_, block_b, like)
        if va.type != vb.type:
            raise self.error(node, f"'{name}' is {va.type} in one branch and {vb.type} in the other; "
                                   f"both branches must give it the same shape and dtype")
        return va, vb

    def stmt_For(self, node):
        if node.orelse:
            raise self.error(node, "for/else is not supported")
        it = node.iter
        if not (isinstance(it, ast.Call)):
            raise self.error(it, "a kernel loop must iterate over tk.range(...), range(...) or tk.static_range(...)")
        fn = self.eval(it.func)
        args = [self.eval(a) for a in it.args]
        kwargs = {k.arg: self.eval(k.value) for k in it.keywords}
        if fn is L.static_range:
            if any(isinstance(a, Value) for a in args):
                raise self.error(it, "tk.static_range bounds must be compile-time values")
            for i in builtins.range(*args):
                self.assign(node.target, i)
                self.visit_body(node.body)
            return
        if fn is not L.range and fn is not builtins.range:
            raise self.error(it, "a kernel loop must iterate over tk.range(...), range(...) or tk.static_range(...)")
        if not isinstance(node.target, ast.Name):
            raise self.error(node.target, "the loop variable must be a plain name")
        if len(args) == 1:
            start, stop, step = 0, args[0], 1
        elif len(args) == 2:
            (start, stop), step = args, 1
        elif len(args) == 3:
            start, stop, step = args
        else:
            raise self.error(it, "tk.range takes (stop), (start, stop) or (start, stop, step)")
        stages = kwargs.pop("stages", None)
        warp_specialize = kwargs.pop("warp_specialize", False)
        if kwargs:
            raise self.error(it, f"unknown tk.range arguments: {', '.join(kwargs)}")
        if not isinstance(step, Value) and step <= 0:
            raise self.error(it, f"tk.range step must be positive, got {step}")
        if stages is not None and (isinstance(stages, Value) or type(stages) is not int or stages < 1):
            raise self.error(it, f"tk.range stages= must be a compile-time int >= 1, got {stages!r}")
        if type(warp_specialize) is not bool:
            raise self.error(it, f"tk.range warp_specialize= must be a compile-time True or False, got "
                                 f"{warp_specialize!r}")
        self.runtime_for(node, start, stop, step, stages, warp_specialize)

    def runtime_for(self, node, start, stop, step, stages, warp_specialize=False):
        bounds = []
        for v in (start, stop, step):
            v = S.to_value(self.b, v, D.int32)
            if not v.dtype.is_int or v.shape != ():
                raise self.error(node.iter, f"tk.range bounds must be integer scalars, got {v.type}")
            bounds.append(S.cast(self.b, v, D.int32))
        body_names = _assigned_names(node.body)
        carried = [n for n in body_names if n in self.env and n != node.target.id
                   and isinstance(self.env[n], (Value, int, float, bool)) and not isinstance(self.env[n], D.DType)]
        inits = {n: self.env[n] for n in carried}
        forced = {}
        local = set()  # rebound names whose new type is a fresh value each iteration: loop-local, not carried
        # Each retry fixes the type of at least one more carried name (a name whose type changes only once
        # another's has, as in a chain d = c; c = b; b = a) or makes one loop-local, so 2 * len(carried) + 1
        # attempts always settle.
        for attempt in builtins.range(2 * len(carried) + 1):
            init_vals = []
            for n in carried:
                v = inits[n]
                if n in forced:
                    v = S.to_value(self.b, v, forced[n].dtype)
                    v = S.cast(self.b, v, forced[n].dtype)
                    if v.shape != forced[n].shape:
                        v = S.broadcast_to(self.b, v, forced[n].shape)
                else:
                    v = S.to_value(self.b, v)
                init_vals.append(v)
            body = Block()
            iv = Value(TileType((), D.int32), node.target.id)
            body.args = [iv] + [Value(v.type, n) for n, v in zip(carried, init_vals)]
            saved = self.env
            self.env = dict(saved)
            self.env[node.target.id] = iv
            for n, a in zip(carried, body.args[1:]):
                self.env[n] = a
            self.b.push(body)
            try:
                self.visit_body(node.body)
            except _Return:
                raise self.error(node, "return inside a loop is not supported") from None
            finally:
                self.b.pop()
            body_env, self.env = self.env, saved
            for n in body_names:  # rebound in the body, but not a tile or number: it cannot be carried
                if n in saved and n not in carried and n not in local and n != node.target.id and n in body_env \
                        and not _same_binding(saved[n], body_env[n]):
                    raise self.error(node, f"'{n}' is rebound inside the tk.range loop, but only tiles and "
                                           f"scalars can be loop-carried, and it is {self.describe(saved[n])} "
                                           f"before the loop; unpack tuples into separate names and "
                                           f"initialise tiles before the loop (e.g. tk.zeros)")
            retry = False
            yields = []
            for n, a in zip(carried, body.args[1:]):
                if n not in body_env:  # an inner loop made it loop-local: so is it here, if it can be
                    if _written_before_read(node.body, n):
                        local.add(n)
                        retry = True
                        continue
                    raise self.error(node, f"'{n}' is rebound with another type in an inner tk.range loop and "
                                           f"read in this loop before it is assigned again; use another name")
                out = body_env[n]
                if not isinstance(out, Value):
                    self.b.push(body)
                    out = S.to_value(self.b, out, a.dtype)
                    self.b.pop()
                if out.type != a.type:
                    can_widen = not isinstance(inits[n], Value) or S.broadcast_shapes_ok(a.shape, out.shape)
                    if can_widen and n not in forced and out.dtype is not None:
                        forced[n] = out.type
                        retry = True
                        continue
                    if _written_before_read(node.body, n):
                        local.add(n)
                        retry = True
                        continue
                    raise self.error(node, f"loop-carried variable '{n}' changes type in the loop: "
                                           f"{a.type} before, {out.type} after one iteration; initialise it "
                                           f"before the loop with its final shape and dtype (e.g. tk.zeros/tk.full)")
                yields.append(out)
            if retry:
                carried = [n for n in carried if n not in local]
                continue
            break
        self.b.push(body)
        self.at(node)
        self.b.create("yield", yields)
        self.b.pop()
        self.at(node)
        attrs = {"stages": stages, **({"warp_specialize": True} if warp_specialize else {})}
        op = self.b.create("for", bounds + init_vals, attrs, [body])
        for n, r in zip(carried, op.results):
            r.name = n
            self.env[n] = r
        for n in local:  # its value after the loop would depend on the trip count: reading it is an error
            del self.env[n]
        for n in body_names:
            if n not in carried and n not in self.env:
                self.loop_locals[n] = ("rebound with another type inside a tk.range loop (after it, the name has "
                                       "no one type; use another name inside the loop)" if n in local
                                       else "defined inside a tk.range loop; define it before the loop/branch")
        self.loop_locals[node.target.id] = "the loop variable of a tk.range loop; define it before the loop/branch"

    # -- expressions --
    def eval(self, node):
        self.at(node)
        method = getattr(self, "expr_" + type(node).__name__, None)
        if method is None:
            raise self.error(node, f"{type(node).__name__} expressions are not supported in kernels")
        return method(node)

    def expr_Constant(self, node):
        return node.value

    def lookup(self, name, node):
        if name in self.env:
            return self.env[name]
        if name in self.loop_locals:
            raise self.error(node, f"'{name}' is not visible here: it was {self.loop_locals[name]}")
        if name in self.info.closure:
            return self.info.closure[name]
        if name in self.info.globals:
            return self.info.globals[name]
        if hasattr(builtins, name):
            return getattr(builtins, name)
        raise self.error(node, f"name '{name}' is not defined")

    def expr_Name(self, node):
        return self.lookup(node.id, node)

    def expr_Tuple(self, node):
        return tuple(self.eval(e) for e in node.elts)

    expr_List = expr_Tuple

    def expr_Attribute(self, node):
        obj = self.eval(node.value)
        attr = node.attr
        if isinstance(obj, S.TensorRef):
            if attr in ("shape", "dtype", "ndim"):
                return getattr(obj, attr)
            raise self.error(node, f"a tensor parameter has .shape, .dtype and .ndim, not .{attr}")
        if isinstance(obj, Value):
            if attr == "T":
                return self.b.create("trans", [obj]).result
            if attr == "shape":
                return obj.shape
            if attr == "dtype":
                return obj.dtype
            if attr in ("to", "reshape", "broadcast_to"):
                return BoundMethod(attr, obj)
            raise self.error(node, f"tiles have .T, .shape, .dtype, .to(), .reshape(), not .{attr}")
        try:
            return getattr(obj, attr)
        except AttributeError:
            raise self.error(node, f"{self.describe(obj)} has no attribute '{attr}'") from None

    def expr_Subscript(self, node):
        obj = self.eval(node.value)
        if isinstance(obj, Value):
            return self.index_tile(node, obj)
        if isinstance(obj, S.TensorRef):
            raise self.error(node, "tensors cannot be indexed in kernels; read them with tk.load(T, offsets, shape)")
        idx = self.eval(node.slice)
        if isinstance(idx, Value):
            raise self.error(node, "indexing a Python sequence needs a compile-time index")
        try:
            return obj[idx]
        except Exception as e:
            raise self.error(node, f"cannot index {self.describe(obj)} with {idx!r}: {e}") from None

    def index_tile(self, node, tile):
        """``x[:, None]``, ``x[:, k]`` (a compile-time index drops the axis) and ``x[a:b]`` (a static slice)."""
        sl = node.slice
        items = sl.elts if isinstance(sl, ast.Tuple) else [sl]
        self.at(node)
        out = tile
        axis = 0  # the axis of ``out`` the next item applies to
        consumed = 0  # axes of ``tile`` the items so far have used
        for it in items:
            if isinstance(it, ast.Slice):
                bounds = [None if e is None else self.eval(e) for e in (it.lower, it.upper, it.step)]
                if bounds[2] not in (None, 1):
                    raise self.error(node, f"tile slices take no step (got {bounds[2]!r})")
                if consumed >= len(tile.shape):
                    raise self.error(node, f"too many indices for a {len(tile.shape)}-d tile")
                self.at(node)
                out = S.slice_tile(self.b, out, axis, bounds[0], bounds[1])
                axis += 1
                consumed += 1
                continue
            k = self.eval(it)
            if k is None:
                out = S.expand_dims(self.b, out, axis)
                axis += 1
            elif isinstance(k, int) and not isinstance(k, bool):
                if consumed >= len(tile.shape):
                    raise self.error(node, f"too many indices for a {len(tile.shape)}-d tile")
                self.at(node)
                out = S.index_tile(self.b, out, axis, k)
                consumed += 1
            else:
                raise self.error(node, "a tile is indexed by ':', None, a compile-time int (drops the axis) or a "
                                       f"static slice a:b; got {self.describe(k)} (for runtime positions use "
                                       "tk.where, or tk.load with an offset)")
        return out

    def expr_BinOp(self, node):
        return self.binop(node, type(node.op), self.eval(node.left), self.eval(node.right))

    def binop(self, node, optype, x, y):
        self.at(node)
        if not isinstance(x, Value) and not isinstance(y, Value):
            try:
                return _PYOPS[optype](x, y)
            except Exception as e:
                raise self.error(node, f"compile-time arithmetic failed: {e}") from None
        if optype is ast.MatMult:
            return S.mma(self.b, x, y, None)
        if optype is ast.Pow:
            raise self.error(node, "** on tiles is not supported; use tk.exp2(y * tk.log2(x)) or repeated *")
        for v in (x, y):
            if not isinstance(v, (Value, int, float, bool)):
                raise self.error(node, f"cannot use {self.describe(v)} in arithmetic")
        return S.binary(self.b, _BINOPS[optype], x, y)

    def expr_UnaryOp(self, node):
        x = self.eval(node.operand)
        op = type(node.op)
        if not isinstance(x, Value):
            return {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_,
                    ast.Invert: operator.invert}[op](x)
        if op is ast.UAdd:
            return x
        return S.unary(self.b, {ast.USub: "neg", ast.Not: "not", ast.Invert: "invert"}[op], x)

    def expr_Compare(self, node):
        left = self.eval(node.left)
        result = None
        for op, comp in zip(node.ops, node.comparators):
            right = self.eval(comp)
            if not isinstance(left, Value) and not isinstance(right, Value):
                if type(op) not in _PYCMP:
                    raise self.error(node, f"{type(op).__name__} is not supported")
                r = _PYCMP[type(op)](left, right)
            else:
                if type(op) not in _CMPOPS:
                    raise self.error(node, f"{type(op).__name__} comparison is not supported on tiles")
                r = S.binary(self.b, _CMPOPS[type(op)], left, right)
            result = r if result is None else self.logical(node, "and", result, r)
            left = right
        return result

    def logical(self, node, kind, x, y):
        if not isinstance(x, Value) and not isinstance(y, Value):
            return (x and y) if kind == "and" else (x or y)
        x = x if isinstance(x, Value) and x.dtype.is_bool else S.binary(self.b, "ne", x, 0)
        y = y if isinstance(y, Value) and y.dtype.is_bool else S.binary(self.b, "ne", y, 0)
        return S.binary(self.b, kind, x, y)

    def expr_BoolOp(self, node):
        kind = "and" if isinstance(node.op, ast.And) else "or"
        out = self.eval(node.values[0])
        for v in node.values[1:]:
            if not isinstance(out, Value):  # compile-time short-circuit, as Python does
                if (kind == "and" and not out) or (kind == "or" and out):
                    return out
            out = self.logical(node, kind, out, self.eval(v))
        return out

    def expr_IfExp(self, node):
        cond = self.eval(node.test)
        if not isinstance(cond, Value):
            return self.eval(node.body if cond else node.orelse)
        return S.where(self.b, cond, self.eval(node.body), self.eval(node.orelse))

    def expr_Call(self, node):
        fn = self.eval(node.func)
        if fn is L.associative_scan:
            return self.associative_scan(node)
        args = []
        for a in node.args:
            if isinstance(a, ast.Starred):
                v = self.eval(a.value)
                if not isinstance(v, (tuple, list)):
                    raise self.error(a, "*args needs a tuple")
                args.extend(v)
            else:
                args.append(self.eval(a))
        kwargs = {}
        for k in node.keywords:
            if k.arg is None:
                raise self.error(node, "**kwargs is not supported in kernels")
            kwargs[k.arg] = self.eval(k.value)
        self.at(node)
        if isinstance(fn, BoundMethod):
            return self.method(node, fn, args, kwargs)
        if isinstance(fn, L.Builtin):
            if fn.impl is None:
                raise self.error(node, f"tk.{fn.name} is only valid as a for-loop iterator")
            try:
                return fn.impl(self.b, *args, **kwargs)
            except TypeError as e:
                raise self.error(node, f"bad arguments to tk.{fn.name}: {e}") from None
        impl = getattr(fn, "__tilekit_impl__", None)
        if impl is not None:
            return impl(self.b, *args, **kwargs)
        if isinstance(fn, JitFunction):
            return self.inline(node, fn, args, kwargs)
        if isinstance(fn, KernelObject):
            raise self.error(node, "calling a @tk.kernel from a kernel is not supported; make it a @tk.func")
        if callable(fn):
            if any(isinstance(a, (Value, S.TensorRef)) for a in list(args) + list(kwargs.values())):
                name = getattr(fn, "__name__", repr(fn))
                raise self.error(node, f"'{name}' is a plain Python function and cannot take tiles; "
                                       f"decorate it with @tk.func to inline it, or use the tk.* equivalent")
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                raise self.error(node, f"compile-time call failed: {e}") from None
        raise self.error(node, f"{self.describe(fn)} is not callable")

    def method(self, node, m, args, kwargs):
        if m.name == "to":
            if len(args) != 1 or kwargs:
                raise self.error(node, ".to() takes one dtype")
            try:
                dt = D.to_dtype(args[0])
            except (TypeError, ValueError) as e:
                raise self.error(node, str(e)) from None
            return S.cast(self.b, m.target, dt)
        if m.name == "reshape":
            shape = args[0] if len(args) == 1 else tuple(args)
            return L.reshape.impl(self.b, m.target, shape)
        if m.name == "broadcast_to":
            return L.broadcast_to.impl(self.b, m.target, args[0] if len(args) == 1 else tuple(args))
        raise self.error(node, f"unknown method .{m.name}")

    def inline(self, node, jf, args, kwargs):
        info = jf.source_info()
        sig = jf.signature
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as e:
            raise self.error(node, f"bad call to @tk.func {jf.fn.__name__}: {e}") from None
        bound.apply_defaults()
        if self.depth > 32:
            raise self.error(node, "@tk.func calls nest too deeply (recursion is not supported)")
        sub = CodeGen(self.b, info, dict(bound.arguments), self.depth + 1)
        try:
            sub.visit_body(info.node.body)
            result = None
        except _Return as r:
            result = r.value
        self.at(node)
        return result

    def associative_scan(self, node):
        args = [self.eval(a) for a in node.args]
        kwargs = {k.arg: self.eval(k.value) for k in node.keywords}
        try:
            bound = _SCAN_SIG.bind(*args, **kwargs)
        except TypeError as e:
            raise self.error(node, f"bad arguments to tk.associative_scan: {e}") from None
        values, axis, combine_fn, reverse = (bound.arguments.get(k, d) for k, d in
                                             (("values", None), ("axis", None), ("combine_fn", None),
                                              ("reverse", False)))
        single = isinstance(values, Value)
        vals = [values] if single else list(values)
        if not vals or not all(isinstance(v, Value) for v in vals):
            raise self.error(node, "tk.associative_scan values must be a tile or a tuple of tiles")
        if len({v.shape for v in vals}) != 1:
            raise self.error(node, f"tk.associative_scan values must share a shape, got {[v.shape for v in vals]}")
        if not isinstance(combine_fn, JitFunction):
            raise self.error(node, "tk.associative_scan's combine_fn must be a @tk.func")
        axis = S.normalize_axis(self.b, vals[0], axis)
        region = Block()
        region.args = [Value(TileType((), v.dtype), f"{side}{i}") for side in ("l", "r") for i, v in enumerate(vals)]
        self.b.push(region)
        try:
            out = self.inline(node, combine_fn, region.args, {})
            outs = [out] if isinstance(out, Value) or not isinstance(out, (tuple, list)) else list(out)
            if len(outs) != len(vals):
                raise self.error(node, f"combine_fn returned {len(outs)} values for {len(vals)} scanned tiles")
            outs = [S.cast(self.b, S.to_value(self.b, o, v.dtype), v.dtype) for o, v in zip(outs, vals)]
            for o in outs:
                if o.shape != ():
                    raise self.error(node, "combine_fn must return scalars (it combines one element pair)")
            self.at(node)
            self.b.create("yield", outs)
        finally:
            self.b.pop()
        self.at(node)
        op = self.b.create("scan", vals, {"axis": axis, "reverse": bool(reverse)}, [region])
        return op.results[0] if single else tuple(op.results)

    def expr_JoinedStr(self, node):
        parts = []
        for v in node.values:
            if isinstance(v, ast.FormattedValue):
                parts.append(str(self.eval(v.value)))
            else:
                parts.append(str(v.value))
        return "".join(parts)

    def describe(self, v):
        if isinstance(v, Value):
            return f"a {v.type} value"
        if isinstance(v, S.TensorRef):
            return "a tensor parameter"
        return f"{type(v).__name__} {v!r}"


def _scan_sig(values, axis, combine_fn, reverse=False):
    pass


_SCAN_SIG = inspect.signature(_scan_sig)


def build_function(kernel, arg_specs: dict, constexprs: dict) -> Function:
    """Lower a kernel to IR for one specialization.

    ``arg_specs`` maps runtime parameter names to a ``TensorType`` or a scalar ``DType``.
    """
    info = kernel.source_info()
    body = Block()
    b = S.Builder(body)
    b.loc = info.loc(info.node)
    params, env = [], {}
    for name, spec in arg_specs.items():
        if isinstance(spec, TensorType):
            v = Value(spec, name)
            params.append(Param(name, "tensor", v))
            env[name] = S.TensorRef(v, b)
        else:
            v = Value(TileType((), spec), name)
            params.append(Param(name, "scalar", v))
            env[name] = v
    env.update(constexprs)
    gen = CodeGen(b, info, env)
    try:
        gen.visit_body(info.node.body)
    except _Return as r:
        if r.value is not None:
            raise CompileError("a kernel cannot return a value; write results with tk.store",
                               b.loc.filename, b.loc.lineno, b.loc.line) from None
    return Function(kernel.fn.__name__, params, body, dict(constexprs), info.loc(info.node))
