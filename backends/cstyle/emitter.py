"""Tile IR -> C-style kernel source, shared by CUDA C++, HIP C++ and OpenCL C.

One program instance is one thread block / work-group of ``T`` threads. Every tile value gets a layout:

* ``scalar``  -- a 0-d value: one C variable, computed redundantly (and so uniformly) by every thread;
* ``virtual`` -- a tile that is a cheap function of element coordinates (``arange``, ``full`` and the
  elementwise/broadcast/reshape ops over them): never stored, re-evaluated at each use, so index and mask
  arithmetic like ``offs[:, None] < M`` costs no registers and no cross-thread traffic;
* ``reg``     -- a per-thread register array. Element ``e`` (row-major flat index) of an ``N``-element tile
  lies in chunk ``e // V`` (``V = min(VEC, N)`` contiguous elements); chunk ``c`` belongs to thread
  ``c % T``, at slots ``(c // T) * V ...``. Consecutive threads own consecutive ``V``-element chunks, so
  global loads and stores coalesce and vectorize (128-bit for fp32 with ``VEC = 4``). The layout depends
  only on ``N``, so ``reshape`` and ``expand_dims`` are free and elementwise ops never cross threads.

Ops whose elements come from other threads (broadcasts of register tiles, ``.T``, gathers with register
index tiles, reductions, scans, ``mma``) go through one shared-memory scratch area between barriers. All
control flow around barriers is uniform (loop bounds and ``if`` conditions are scalars, which every thread
holds alike), and per-element guards never contain a barrier.

A :class:`~backends.cstyle.dialects.Dialect` supplies what differs between CUDA, HIP and OpenCL.
"""
from __future__ import annotations

import os

import jinja2

from ... import __version__
from ... import dtypes as D
from ...analysis import is_nonnegative, loop_owners
from ...ir import offsets_and_mask, walk
from .types import float_lit, is_narrow, literal, round_fn, rtype, stype, wide_unsigned

_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(os.path.dirname(__file__), "templates")),
                          trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                          undefined=jinja2.StrictUndefined)

VIRTUAL_COST_LIMIT = 48  # expression nodes a virtual tile may expand to before it is materialized
ELEMENTWISE = ("unary", "binary", "cmp", "where", "cast")


def prod(shape):
    out = 1
    for s in shape:
        out *= s
    return out


def log2(n):
    assert n > 0 and n & (n - 1) == 0, f"not a power of two: {n}"
    return n.bit_length() - 1


def strides(shape):
    out, acc = [], 1
    for s in reversed(shape):
        out.append(acc)
        acc *= s
    return out[::-1]


class Val:
    __slots__ = ("kind", "name")

    def __init__(self, kind, name=None):
        self.kind = kind
        self.name = name

    def __repr__(self):
        return f"Val({self.kind}, {self.name})"


class EmitError(NotImplementedError):
    pass


class CEmitter:
    def __init__(self, fn, kernel_name, dialect, num_warps=None, vec=None):
        self.fn = fn
        self.kernel_name = kernel_name
        self.d = dialect
        self.num_warps = num_warps or dialect.default_num_warps
        self.T = self.num_warps * dialect.warp_size
        self.VEC = vec or self.pick_vec(fn, dialect)
        self.vals = {}
        self.names = {}
        self.counter = 0
        self.helpers = {}         # name -> C definition (emitted once, in first-use order)
        self.combiners = []
        self.smem_bytes = 0
        self.owners = loop_owners(fn)
        self.scopes = [{}]
        self.cost_memo = {}
        self.features = set()      # dialect features the kernel needs (e.g. "int64_atomics", "fp64")
        self.matrix_ops = []       # how each mma lowered: "wmma", "mfma", "fma"
        self.written = {op.operands[0] for op in walk(fn.body) if op.name in ("store", "atomic_add")}

    @staticmethod
    def pick_vec(fn, dialect):
        """Elements per chunk: 16 bytes of the narrowest (non-packed) tensor the kernel touches, 4 to 8."""
        sizes = [dialect.sizeof(stype(p.value.type.dtype)) for p in fn.params
                 if p.kind == "tensor" and not p.value.type.packed and not p.value.type.dtype.is_bool]
        if not sizes:
            return dialect.default_vec
        return max(dialect.default_vec, min(8, 16 // min(sizes)))

    # ---- names and helpers -------------------------------------------------------------------------
    def fresh(self, hint="t"):
        hint = "".join(c if c.isalnum() or c == "_" else "_" for c in (hint or "t"))
        n = f"{hint}_{self.counter}"
        self.counter += 1
        return n

    def name_of(self, v):
        n = self.names.get(v)
        if n is None:
            n = self.fresh(v.name or "v")
            self.names[v] = n
        return n

    def need(self, name, definition):
        if name not in self.helpers:
            self.helpers[name] = definition
        return name

    def cache_get(self, key):
        for s in reversed(self.scopes):
            if key in s:
                return s[key]
        return None

    def cache_put(self, key, value):
        self.scopes[-1][key] = value

    # ---- layout ------------------------------------------------------------------------------------
    def layout(self, shape):
        """(V, chunks, chunks per thread, slots per thread, guarded) of a tile of ``shape``."""
        n = prod(shape)
        v = min(self.VEC, n)
        chunks = n // v
        ptc = -(-chunks // self.T)
        return v, chunks, ptc, ptc * v, chunks % self.T != 0

    def slots(self, shape):
        return self.layout(shape)[3]

    def coords(self, shape, flat="_e", prefix="_c"):
        """Lines declaring the coordinates of flat index ``flat`` in ``shape``."""
        lines = []
        st = strides(shape)
        for d, (s, k) in enumerate(zip(shape, st)):
            e = flat if k == 1 else f"({flat} >> {log2(k)})"
            e = e if d == 0 else f"({e} & {s - 1})"
            lines.append(f"const int {prefix}{d} = {e};")
        return lines

    def coord_exprs(self, flat, shape):
        st = strides(shape)
        out = []
        for d, (s, k) in enumerate(zip(shape, st)):
            e = flat if k == 1 else f"(({flat}) >> {log2(k)})"
            out.append(e if d == 0 else f"({e} & {s - 1})")
        return out

    @staticmethod
    def flat_expr(coords, shape):
        st = strides(shape)
        terms = [c if k == 1 else f"({c}) * {k}" for c, k, s in zip(coords, st, shape) if s > 1]
        return " + ".join(terms) if terms else "0"

    def foreach(self, shape, body):
        """Lines running ``body`` (lines using ``_s`` slot, ``_e`` flat index, ``_c<d>`` coordinates) for every
        element of a ``shape`` tile this thread owns."""
        v, chunks, ptc, _, guard = self.layout(shape)
        u = self.d.unroll
        inner = [f"const int _s = _i * {v} + _j;", f"const int _e = _ch * {v} + _j;"]
        inner += self.coords(shape) + body
        lines = [u, f"for (int _i = 0; _i < {ptc}; ++_i) {{", f"  const int _ch = _i * {self.T} + tk_tid;"]
        pad = "  "
        if guard:
            lines.append(f"  if (_ch < {chunks}) {{")
            pad = "    "
        lines += [pad + u, pad + f"for (int _j = 0; _j < {v}; ++_j) {{"] + [pad + "  " + l for l in inner] + [pad + "}"]
        if guard:
            lines.append("  }")
        lines.append("}")
        return [l for l in lines if l.strip()]

    def coords_list(self, shape):
        return [f"_c{d}" for d in range(len(shape))]

    # ---- values at coordinates --------------------------------------------------------------------
    def cost(self, v):
        if v in self.cost_memo:
            return self.cost_memo[v]
        k = self.vals.get(v)
        if k is None or k.kind == "scalar":
            c = 1
        else:
            op = v.owner
            c = 1 + sum(self.cost(o) for o in op.operands if o.shape != ())
        self.cost_memo[v] = c
        return c

    def at(self, v, coords, shape, slot="_s", subst=None):
        """C expression of ``v`` at the element of a ``shape`` tile with coordinates ``coords``
        (``v`` broadcasts to ``shape``: it is a scalar, or has the same rank with size-1 dims)."""
        k = self.vals[v]
        if v.shape == ():
            return k.name
        if subst and v in subst:
            return f"{subst[v]}[{slot}]"
        cs = [c if v.shape[d] != 1 else "0" for d, c in enumerate(coords)]
        if k.kind == "virtual":
            return self.vexpr(v, cs)
        if tuple(v.shape) == tuple(shape):
            return f"{k.name}[{slot}]"
        raise EmitError(f"internal: register tile {v} of shape {v.shape} used at shape {shape} without a broadcast")

    def vexpr(self, v, cs):
        """Expression of a virtual (or scalar) value at its own coordinates ``cs``."""
        k = self.vals[v]
        if v.shape == () or k.kind == "scalar":
            return k.name
        assert k.kind == "virtual", (v, k)
        op = v.owner
        n = op.name
        if n == "arange":
            return cs[0]
        if n == "full":
            return self.vals[op.operands[0]].name
        if n == "expand_dims":
            a = op.attrs["axis"]
            return self.vexpr(op.operands[0], cs[:a] + cs[a + 1:])
        if n == "broadcast":
            x = op.operands[0]
            if x.shape == ():
                return self.vals[x].name
            return self.vexpr(x, [c if x.shape[d] != 1 else "0" for d, c in enumerate(cs)])
        if n == "reshape":
            x = op.operands[0]
            flat = self.flat_expr(cs, v.shape)
            return self.vexpr(x, self.coord_exprs(f"({flat})", x.shape))
        if n == "trans":
            return self.vexpr(op.operands[0], cs[::-1])
        if n in ELEMENTWISE:
            args = []
            for o in op.operands:
                if o.shape == ():
                    args.append(self.vals[o].name)
                else:
                    args.append(self.vexpr(o, [c if o.shape[d] != 1 else "0" for d, c in enumerate(cs)]))
            return self.scalar_expr(op, args)
        raise EmitError(f"internal: {n} cannot be virtual")

    # ---- materialization and cross-thread movement -------------------------------------------------
    def declare_reg(self, name, dt, shape):
        return f"{rtype(dt)} {name}[{self.slots(shape)}];"

    def materialize(self, v, out):
        """A register array name holding ``v`` (a virtual or register tile)."""
        k = self.vals[v]
        if k.kind == "reg":
            return k.name
        key = ("mat", v)
        hit = self.cache_get(key)
        if hit:
            return hit
        name = self.fresh((v.name or "m") + "_r")
        out.append(self.declare_reg(name, v.dtype, v.shape))
        out += self.foreach(v.shape, [f"{name}[_s] = {self.at(v, self.coords_list(v.shape), v.shape)};"])
        self.cache_put(key, name)
        return name

    def smem_alloc(self, sizes):
        """Byte offsets for buffers of ``sizes`` bytes in the scratch area (each 128-byte aligned)."""
        offs, cur = [], 0
        for s in sizes:
            offs.append(cur)
            cur += -(-s // 128) * 128
        self.smem_bytes = max(self.smem_bytes, cur)
        return offs

    def smem_ptr(self, ctype, offset):
        return f"(({self.d.local_ptr(ctype)})(tk_smem + {offset}))"

    def to_smem(self, v, buf, out, convert=None):
        """Lines writing every element of ``v`` (flat index) into the smem array ``buf``."""
        cs = self.coords_list(v.shape)
        val = self.at(v, cs, v.shape)
        if convert:
            val = convert(val)
        out += self.foreach(v.shape, [f"{buf}[_e] = {val};"])

    def barrier(self, out):
        out.append(self.d.barrier)

    def smem_gather(self, v, shape, src_flat, hint, out, keep_shape_of_v=False):
        """A new register tile of ``shape`` whose element at coordinates ``_c`` is ``v``'s element at flat
        index ``src_flat(coords)``: ``v`` goes to shared memory, and each thread reads what it needs."""
        ct = rtype(v.dtype)
        (off,) = self.smem_alloc([prod(v.shape) * self.d.sizeof(ct)])
        buf = self.fresh("sm")
        out.append(f"{self.d.local_ptr(ct)} {buf} = {self.smem_ptr(ct, off)};")
        self.barrier(out)
        self.to_smem(v, buf, out)
        self.barrier(out)
        name = self.fresh(hint)
        out.append(self.declare_reg(name, v.dtype, shape))
        out += self.foreach(shape, [f"{name}[_s] = {buf}[{src_flat(self.coords_list(shape))}];"])
        return name

    def broadcast_reg(self, v, shape, out):
        """``v`` (a register tile) broadcast to ``shape`` as a register tile."""
        key = ("bcast", v, tuple(shape))
        hit = self.cache_get(key)
        if hit:
            return hit
        if prod(v.shape) == prod(shape):  # only size-1 dims differ: the same layout
            return self.vals[v].name

        def src(cs):
            return self.flat_expr([c if v.shape[d] != 1 else "0" for d, c in enumerate(cs)], v.shape)
        name = self.smem_gather(v, shape, src, (v.name or "b") + "_bc", out)
        self.cache_put(key, name)
        return name

    def operand_subst(self, operands, shape, out):
        """Register operands of an elementwise op whose shape differs from the result's get broadcast first."""
        subst = {}
        for o in operands:
            if o.shape == () or tuple(o.shape) == tuple(shape):
                continue
            if self.vals[o].kind == "reg":
                subst[o] = self.broadcast_reg(o, shape, out)
        return subst

    # ---- emission ----------------------------------------------------------------------------------
    def emit(self):
        params = []
        for p in self.fn.params:
            if p.kind == "tensor":
                t = p.value.type
                const = "" if p.value in self.written else "const "
                params.append(f"{self.d.global_qual}{const}{stype(t.dtype, t.packed)}* {p.name}_ptr")
                params += [f"int {p.name}_shape{d}" for d in range(t.rank)]
                if t.packed:
                    params += [f"int {p.name}_wstride{d}" for d in range(t.rank - 1)]
                else:
                    params += [f"int {p.name}_stride{d}" for d in range(t.rank)]
                self.vals[p.value] = Val("tensor", p.name)
            else:
                dt = p.value.dtype
                cname = f"p_{p.name}"
                if dt.is_bool:
                    params.append(f"int {cname}_i")
                else:
                    params.append(f"{rtype(dt)} {cname}")
                self.vals[p.value] = Val("scalar", cname)
        body = []
        for p in self.fn.params:
            if p.kind == "scalar" and p.value.dtype.is_bool:
                body.append(f"const bool p_{p.name} = p_{p.name}_i != 0;")
        body += self.block(self.fn.body)
        origin = str(self.fn.loc) if self.fn.loc else "?"
        return _ENV.get_template(self.d.template).render(
            version=__version__, origin=origin, kernel_name=self.kernel_name, source_name=self.fn.name,
            constexprs=", ".join(f"{k}={v!r}" for k, v in self.fn.constexprs.items()) or "none",
            params=params, body=body, helpers=list(self.helpers.values()), combiners=self.combiners,
            threads=self.T, smem_bytes=self.smem_bytes, features=sorted(self.features), d=self.d,
            num_warps=self.num_warps, vec=self.VEC)

    def block(self, block):
        out = []
        for op in block.ops:
            if op.name == "yield":
                continue
            out += self.op(op)
        return out

    def op(self, op):
        n = op.name
        handler = getattr(self, "op_" + n, None)
        if handler is None:
            if n in ELEMENTWISE:
                return self.elementwise(op)
            raise EmitError(f"{self.d.name}: op {n} is not supported")
        return handler(op)

    def set_scalar(self, op, expr):
        r = op.results[0]
        name = self.name_of(r)
        self.vals[r] = Val("scalar", name)
        return [f"const {rtype(r.dtype)} {name} = {expr};"]

    def set_virtual(self, op):
        self.vals[op.results[0]] = Val("virtual")
        return []

    # -- leaves --
    def op_const(self, op):
        return self.set_scalar(op, literal(op.attrs["value"], op.attrs["dtype"]))

    def op_program_id(self, op):
        return self.set_scalar(op, self.d.program_id(op.attrs["axis"]))

    def op_num_programs(self, op):
        return self.set_scalar(op, self.d.num_programs(op.attrs["axis"]))

    def op_dim(self, op):
        return self.set_scalar(op, f"{op.operands[0].name}_shape{op.attrs['axis']}")

    def op_arange(self, op):
        return self.set_virtual(op)

    def op_full(self, op):
        return self.set_virtual(op)

    # -- elementwise --
    def elementwise(self, op):
        r = op.results[0]
        if r.shape == ():
            return self.set_scalar(op, self.scalar_expr(op, [self.vals[o].name for o in op.operands]))
        if all(o.shape == () or self.vals[o].kind == "virtual" for o in op.operands):
            self.vals[r] = Val("virtual")
            if self.cost(r) <= VIRTUAL_COST_LIMIT:
                return []
        out = []
        subst = self.operand_subst(op.operands, r.shape, out)
        cs = self.coords_list(r.shape)
        name = self.name_of(r)
        args = [self.at(o, cs, r.shape, subst=subst) for o in op.operands]
        out.append(self.declare_reg(name, r.dtype, r.shape))
        out += self.foreach(r.shape, [f"{name}[_s] = {self.scalar_expr(op, args)};"])
        self.vals[r] = Val("reg", name)
        return out

    def op_broadcast(self, op):
        x, r = op.operands[0], op.results[0]
        if x.shape == () or self.vals[x].kind == "virtual":
            return self.set_virtual(op)
        out = []
        self.vals[r] = Val("reg", self.broadcast_reg(x, r.shape, out))
        return out

    def op_expand_dims(self, op):
        x, r = op.operands[0], op.results[0]
        if x.shape == ():
            return self.set_virtual(op)  # a 1-element tile of a scalar
        self.vals[r] = Val(self.vals[x].kind, self.vals[x].name)
        return []

    op_reshape = op_expand_dims

    def op_trans(self, op):
        x, r = op.operands[0], op.results[0]
        if self.vals[x].kind == "virtual":
            return self.set_virtual(op)
        out = []
        m, n = x.shape
        name = self.smem_gather(x, r.shape, lambda cs: f"{cs[1]} * {n} + {cs[0]}", (x.name or "t") + "_T", out)
        self.vals[r] = Val("reg", name)
        return out

    # The scalar C expression of one elementwise op over operand expressions.
    def scalar_expr(self, op, args):
        n = op.name
        if n == "where":
            return f"(({args[0]}) ? ({args[1]}) : ({args[2]}))"
        if n == "cast":
            return self.cast_expr(args[0], op.operands[0].dtype, op.attrs["dtype"])
        if n == "unary":
            return self.unary_expr(op.attrs["op"], args[0], op.results[0].dtype)
        return self.binary_expr(op.attrs["op"], args[0], args[1], op.operands[0].dtype)

    def rounded(self, expr, dt):
        f = round_fn(dt)
        return f"{f}({expr})" if f else expr

    def unary_expr(self, k, a, dt):
        ct = rtype(dt)
        if k == "not":
            return f"(!({a}))"
        if dt.is_bool and k == "invert":
            return f"(!({a}))"
        if dt.is_int:
            u = wide_unsigned(dt)
            if k == "neg":
                return f"(({ct})(({u})0 - ({u})({a})))"
            if k == "invert":
                return f"(({ct})(~({u})({a})))"
            if k == "abs":
                return f"(({ct})(({a}) < 0 ? ({u})0 - ({u})({a}) : ({u})({a})))"
            raise EmitError(f"unary {k} on {dt}")
        one = float_lit(1.0, dt)
        if k == "neg":
            return f"(-({a}))"
        if k == "abs":
            return f"fabs({a})"
        expr = {
            "exp": "exp({})", "exp2": "exp2({})", "log": "log({})", "log2": "log2({})", "sqrt": "sqrt({})",
            "rsqrt": f"({one} / sqrt({{}}))", "sigmoid": f"({one} / ({one} + exp(-({{}}))))",
            "tanh": "tanh({})", "sin": "sin({})", "cos": "cos({})", "floor": "floor({})", "ceil": "ceil({})",
        }.get(k)
        if k == "softplus":
            t = float_lit(20.0, dt)
            expr = f"(({{0}}) > {t} ? ({{0}}) : log1p(exp(fmin(({{0}}), {t}))))"
            return self.rounded(expr.format(a), dt)
        if expr is None:
            raise EmitError(f"unary {k}")
        return self.rounded(expr.format(a), dt)

    def int_helper(self, kind, dt):
        """Name of a generated integer helper (C-semantics division, defined shifts) for ``dt``."""
        ct, u = rtype(dt), wide_unsigned(dt)
        width = 64 if dt.bits == 64 else 32
        signed = dt.kind == "int"
        name = f"tk_{kind}_{ct.replace(' ', '_')}"
        fq = self.d.fn_qual
        if kind == "div":
            body = (f"if (b == 0) return a; " + (f"if (b == ({ct})-1) return ({ct})(({u})0 - ({u})a); " if signed else "")
                    + f"return ({ct})(a / b);")
        elif kind == "mod":
            body = (f"if (b == 0) return a; " + (f"if (b == ({ct})-1) return ({ct})0; " if signed else "")
                    + f"return ({ct})(a % b);")
        elif kind == "shl":
            body = f"if (b < 0) return a; if (b >= {width}) return ({ct})0; return ({ct})(({u})a << b);"
        elif kind == "shr":
            if signed:
                body = f"if (b < 0) return a; if (b >= {width}) return ({ct})(a < 0 ? -1 : 0); return ({ct})(a >> b);"
            else:
                body = f"if (b < 0) return a; if (b >= {width}) return ({ct})0; return ({ct})(a >> b);"
        elif kind == "pow":
            body = (f"if (b < 0) return ({ct})(a == 1 ? 1 : (a == ({ct})-1 ? ((b & 1) ? -1 : 1) : 0)); "
                    if signed else "") + \
                f"{u} r = 1, x = ({u})a; while (b > 0) {{ if (b & 1) r *= x; x *= x; b >>= 1; }} return ({ct})r;"
        else:
            raise EmitError(kind)
        self.need(name, f"{fq} {ct} {name}({ct} a, {ct} b) {{ {body} }}")
        return name

    def float_helper(self, kind, dt):
        ct = rtype(dt)
        name = f"tk_{kind}_{ct}"
        cmp = ">" if kind == "max" else "<"
        self.need(name, f"{self.d.fn_qual} {ct} {name}({ct} a, {ct} b) {{ "
                        f"return (a != a || b != b) ? a + b : (a {cmp} b ? a : b); }}")
        return name

    def binary_expr(self, k, a, b, dt):
        sym = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
        if k in sym:
            return f"(({a}) {sym[k]} ({b}))"
        ct = rtype(dt)
        if dt.is_bool:
            return {"and": f"(({a}) && ({b}))", "or": f"(({a}) || ({b}))", "xor": f"(({a}) != ({b}))",
                    "maximum": f"(({a}) || ({b}))", "minimum": f"(({a}) && ({b}))"}[k]
        if dt.is_float:
            if k in ("add", "sub", "mul", "div"):
                s = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[k]
                return self.rounded(f"(({a}) {s} ({b}))", dt)
            if k == "floordiv":
                return self.rounded(f"floor(({a}) / ({b}))", dt)
            if k == "mod":
                return self.rounded(f"fmod({a}, {b})", dt)
            if k == "pow":
                return self.rounded(f"pow({a}, {b})", dt)
            if k in ("maximum", "minimum"):
                return f"{self.float_helper(k[:3], dt)}({a}, {b})"
            raise EmitError(f"binary {k} on {dt}")
        u = wide_unsigned(dt)
        if k in ("add", "sub", "mul"):
            s = {"add": "+", "sub": "-", "mul": "*"}[k]
            return f"(({ct})(({u})({a}) {s} ({u})({b})))"
        if k in ("and", "or", "xor"):
            s = {"and": "&", "or": "|", "xor": "^"}[k]
            return f"(({ct})(({a}) {s} ({b})))"
        if k in ("maximum", "minimum"):
            c = ">" if k == "maximum" else "<"
            name = f"tk_{k[:3]}_{ct}"
            self.need(name, f"{self.d.fn_qual} {ct} {name}({ct} a, {ct} b) {{ return a {c} b ? a : b; }}")
            return f"{name}({a}, {b})"
        if k in ("floordiv", "mod", "shl", "shr", "pow"):
            return f"{self.int_helper({'floordiv': 'div'}.get(k, k), dt)}({a}, {b})"
        raise EmitError(f"binary {k} on {dt}")

    def cast_expr(self, a, src, dst):
        if dst.is_bool:
            return f"(({a}) != 0)"
        sct, dct = rtype(src), rtype(dst)
        if dst.is_float:
            if src.is_bool:
                return f"(({a}) ? {float_lit(1.0, dst)} : {float_lit(0.0, dst)})"
            if src is dst:
                return a
            conv = a if sct == dct else f"(({dct})({a}))"
            return self.rounded(conv, dst) if is_narrow(dst) else conv
        # integer destination
        if src.is_float:
            lo, hi = D.int_range(dst)
            name = f"tk_f2i_{sct}_{dct.replace(' ', '_')}"
            # C truncation toward zero; NaN and +-inf give 0 and the rest saturates (the reference's rule)
            self.need(name, f"{self.d.fn_qual} {dct} {name}({sct} x) {{ double y = trunc((double)x); "
                            f"if (y != y || isinf(y)) return ({dct})0; "
                            f"if (y <= {float(lo)!r}) return ({dct}){literal(lo, dst)}; "
                            f"if (y >= {float(hi)!r}) return ({dct}){literal(hi, dst)}; return ({dct})y; }}")
            self.features.add("fp64")
            return f"{name}({a})"
        return f"(({dct})({a}))" if sct != dct else a

    # -- memory --
    def address(self, op, shape, out, coords_fn=None):
        """Per-element address pieces for a load/store of a ``shape`` tile.

        Returns (index exprs per dim, mask exprs, subst) using ``_c<d>`` coordinates and slot ``_s``."""
        tensor, offs, _, mask = offsets_and_mask(op)
        t = tensor.name
        idx, masks, subst = [], [], {}
        for d, (o, s) in enumerate(zip(offs, shape)):
            c = f"_c{d}"
            if o.shape == ():
                i = f"({self.vals[o].name} + {c})"
                masks.append(f"{i} < {t}_shape{d}")
                if not is_nonnegative(o, self.owners):
                    masks.append(f"{i} >= 0")
            else:
                k = self.vals[o]
                if k.kind == "virtual":
                    i = f"({self.vexpr(o, [c])})"
                else:
                    key = ("gather", o, tuple(shape), d)
                    name = self.cache_get(key)
                    if name is None:
                        name = self.smem_gather(o, shape, lambda cs, d=d: cs[d], (o.name or "ix") + "_g", out)
                        self.cache_put(key, name)
                    i = f"{name}[_s]"
            idx.append(i)
        if mask is not None:
            k = self.vals[mask]
            if k.kind == "reg" and tuple(mask.shape) != tuple(shape):
                subst[mask] = self.broadcast_reg(mask, shape, out)
            masks.append(self.at(mask, self.coords_list(shape), shape, subst=subst))
        return idx, masks, subst

    def linear(self, t, idx, packed=False):
        if packed:
            raise AssertionError
        return " + ".join(f"(tk_i64)({i}) * {t}_stride{d}" for d, i in enumerate(idx))

    def load_elem(self, dt, ptr):
        if dt is D.float16:
            return f"tk_h2f({ptr})"
        if dt is D.bfloat16:
            return f"tk_b2f({ptr})"
        if dt.is_bool:
            return f"(({ptr}) != 0)"
        return ptr

    def store_elem(self, dt, val):
        if dt is D.float16:
            return f"tk_f2h({val})"
        if dt is D.bfloat16:
            return f"tk_f2b({val})"
        if dt.is_bool:
            return f"(tk_u8)(({val}) ? 1 : 0)"
        return val

    def vector_ok(self, op, shape, dt):
        tensor, offs, _, mask = offsets_and_mask(op)
        v = self.layout(shape)[0]
        return (mask is None and not tensor.type.packed and v > 1 and shape[-1] % v == 0
                and offs[-1].shape == () and self.d.vector_type(dt, v) is not None)

    def op_load(self, op):
        tensor, offs, other, mask = offsets_and_mask(op)
        r = op.results[0]
        shape = op.attrs["shape"]
        out = []
        idx, masks, _ = self.address(op, shape, out)
        t = tensor.name
        name = self.name_of(r)
        self.vals[r] = Val("reg", name)
        out.append(self.declare_reg(name, r.dtype, shape))
        other_s = self.vals[other].name
        if tensor.type.packed:
            val = self.packed_value(tensor, r.dtype, idx)
        else:
            val = self.load_elem(tensor.dtype, f"{t}_ptr[{self.linear(t, idx)}]")
        cond = " && ".join(f"({m})" for m in masks)
        scalar = [f"{name}[_s] = ({cond}) ? ({val}) : {other_s};" if cond else f"{name}[_s] = {val};"]
        if not self.vector_ok(op, shape, tensor.dtype):
            return out + self.foreach(shape, scalar)
        return out + self.vector_loop(op, shape, idx, masks, scalar, vector_load=(name, tensor.dtype))

    def vector_loop(self, op, shape, idx, masks, scalar_body, vector_load=None, vector_store=None):
        """The element loop of a load/store with a V-wide fast path for whole, aligned, in-bounds chunks."""
        tensor = op.operands[0]
        t = tensor.name
        v, chunks, ptc, _, guard = self.layout(shape)
        rank = len(shape)
        last = rank - 1
        u = self.d.unroll
        addr = self.linear(t, idx)
        m0 = [m for m in masks]
        fast = [f"{t}_stride{last} == 1", f"{idx[last]} + {v} <= {t}_shape{last}"] + m0
        ptr = f"({t}_ptr + {addr})"
        if self.d.vector_needs_alignment:
            fast.append(f"(((tk_uptr){ptr}) % {self.d.vector_align(tensor.dtype, v)}) == 0")
        head = [f"const int _s = _i * {v};", f"const int _e = _ch * {v};"] + self.coords(shape)
        if vector_load:
            name, dt = vector_load
            vec_lines = self.d.vload(dt, v, ptr, [f"{name}[_s + {j}]" for j in range(v)])
        else:
            value, dt = vector_store
            vals = []
            for j in range(v):
                cs = self.coords_list(shape)
                cs[last] = f"(_c{last} + {j})"
                vals.append(self.at(value, cs, shape, slot=f"_s + {j}"))
            vec_lines = self.d.vstore(dt, v, ptr, vals)
        slow = [u, f"for (int _j = 0; _j < {v}; ++_j) {{", f"  const int _s = _i * {v} + _j;",
                f"  const int _e = _ch * {v} + _j;"] + ["  " + l for l in self.coords(shape) + scalar_body] + ["}"]
        chunk = head + [f"if ({' && '.join(f'({c})' for c in fast)}) {{"] + ["  " + l for l in vec_lines] + \
            ["} else {"] + ["  " + l for l in slow if l] + ["}"]
        lines = [u, f"for (int _i = 0; _i < {ptc}; ++_i) {{", f"  const int _ch = _i * {self.T} + tk_tid;"]
        if guard:
            lines += [f"  if (_ch < {chunks}) {{"] + ["    " + l for l in chunk] + ["  }"]
        else:
            lines += ["  " + l for l in chunk]
        lines.append("}")
        return [l for l in lines if l.strip()]

    def packed_value(self, tensor, dt, idx):
        """Expression decoding one element of a packed tensor (dense little-endian bits per row, rows on
        int32 word boundaries, as tilekit/packing.py lays it out)."""
        t = tensor.name
        bits = dt.bits
        row = " + ".join([f"(tk_i64)({i}) * {t}_wstride{d}" for d, i in enumerate(idx[:-1])] or ["(tk_i64)0"])
        fq = self.d.fn_qual
        g = self.d.global_qual
        ld = self.need("tk_packed_code", (
            f"{fq} int tk_packed_code({g}const int* p, tk_i64 row, tk_i64 col, int bits) {{ "
            f"tk_i64 bit = col * bits; tk_i64 w = row + (bit >> 5); int sh = (int)(bit & 31); "
            f"tk_u64 lo = (tk_u64)(unsigned)p[w]; "
            f"tk_u64 hi = (sh + bits > 32) ? (tk_u64)(unsigned)p[w + 1] : (tk_u64)0; "
            f"return (int)(((lo | (hi << 32)) >> sh) & (tk_u64)((1u << bits) - 1u)); }}"))
        code = f"{ld}({t}_ptr, {row}, (tk_i64)({idx[-1]}), {bits})"
        if dt.is_int:
            if dt.kind == "int":
                s = 1 << (bits - 1)
                return f"(({code} ^ {s}) - {s})"
            return code
        top = (1 << dt.exponent_bits) - 1
        special = 1 if dt.ieee_specials else 2 if dt is D.float8_e4m3 else 0
        name = self.need("tk_decode_small_float", (
            f"{fq} float tk_decode_small_float(int code, int bits, int eb, int mb, int bias, int special) {{ "
            f"float sign = ((code >> (bits - 1)) & 1) ? -1.0f : 1.0f; int e = (code >> mb) & ((1 << eb) - 1); "
            f"int m = code & ((1 << mb) - 1); float v; "
            f"if (e == 0) v = (float)m * tk_u2f((unsigned)(127 + 1 - bias - mb) << 23); "
            f"else v = tk_u2f(((unsigned)(e + 127 - bias) << 23) | ((unsigned)m << (23 - mb))); "
            f"if (special == 1 && e == (1 << eb) - 1) v = (m == 0) ? TK_INF : TK_NAN; "
            f"if (special == 2 && e == (1 << eb) - 1 && m == (1 << mb) - 1) v = TK_NAN; "
            f"return sign * v; }}"))
        del top
        return (f"{name}({code}, {bits}, {dt.exponent_bits}, {dt.mantissa_bits}, {dt.bias}, {special})")

    def store_like(self, op):
        tensor, _, value, _ = offsets_and_mask(op)
        shape = value.shape
        out = []
        idx, masks, subst = self.address(op, shape, out)
        if value.shape != () and self.vals[value].kind == "reg" and tuple(value.shape) != tuple(shape):
            subst[value] = self.broadcast_reg(value, shape, out)
        t = tensor.name
        val = self.at(value, self.coords_list(shape), shape, subst=subst)
        cond = " && ".join(f"({m})" for m in masks)
        addr = self.linear(t, idx)
        if op.name == "store":
            stmt = f"{t}_ptr[{addr}] = {self.store_elem(tensor.dtype, val)};"
        else:
            stmt = self.d.atomic_add(self, tensor.dtype, f"({t}_ptr + {addr})", val) + ";"
        body = [f"if ({cond}) {stmt}" if cond else stmt]
        if op.name == "store" and self.vector_ok(op, shape, tensor.dtype) and not subst:
            return out + self.vector_loop(op, shape, idx, masks, body, vector_store=(value, tensor.dtype))
        return out + self.foreach(shape, body)

    op_store = store_like
    op_atomic_add = store_like

    # -- reductions and scans --
    def op_reduce(self, op):
        x, r = op.operands[0], op.results[0]
        kind, axis = op.attrs["kind"], op.attrs["axis"]
        dt = x.dtype
        ct = rtype(dt)
        out_shape = tuple(r.shape)
        L = x.shape[axis]
        R = prod(out_shape)
        G = 1
        while G * 2 <= L and R * G * 2 <= self.T:
            G *= 2
        szx = prod(x.shape) * self.d.sizeof(ct)
        off_x, off_p = self.smem_alloc([szx, R * G * self.d.sizeof(ct)])
        out = []
        bx, bp = self.fresh("red_x"), self.fresh("red_p")
        out.append(f"{self.d.local_ptr(ct)} {bx} = {self.smem_ptr(ct, off_x)};")
        out.append(f"{self.d.local_ptr(ct)} {bp} = {self.smem_ptr(ct, off_p)};")
        self.barrier(out)
        self.to_smem(x, bx, out)
        self.barrier(out)

        def comb(a, b):
            if kind == "sum":
                if dt.is_float:
                    return f"({a}) + ({b})"
                u = wide_unsigned(dt)
                return f"({ct})(({u})({a}) + ({u})({b}))"
            return self.binary_expr("maximum" if kind == "max" else "minimum", a, b, dt)
        # stage 1: pair p = (output r, lane g) reduces x[r, g::G] along the axis
        xst = strides(x.shape)
        astride = xst[axis]
        npairs = R * G
        ppt = -(-npairs // self.T)
        rcoords = self.coord_exprs("_r", out_shape) if out_shape else []
        base_coords = rcoords[:axis] + ["0"] + rcoords[axis:]
        base = self.flat_expr(base_coords, x.shape) if out_shape else "0"
        u = self.d.unroll
        stage1 = [f"for (int _q = 0; _q < {ppt}; ++_q) {{", f"  const int _p = _q * {self.T} + tk_tid;"]
        inner = [f"const int _r = _p >> {log2(G)};", f"const int _g = _p & {G - 1};",
                 f"const int _b = {base};",
                 f"{ct} _acc = {bx}[_b + _g * {astride}];",
                 f"for (int _k = _g + {G}; _k < {L}; _k += {G}) _acc = {comb('_acc', f'{bx}[_b + _k * {astride}]')};",
                 f"{bp}[_p] = _acc;"]
        if npairs % self.T:
            stage1 += [f"  if (_p < {npairs}) {{"] + ["    " + l for l in inner] + ["  }"]
        else:
            stage1 += ["  " + l for l in inner]
        stage1.append("}")
        out += stage1
        self.barrier(out)
        fin = lambda e: self.rounded(e, dt) if (kind == "sum" and is_narrow(dt)) else e
        name = self.name_of(r)
        red = [f"{ct} _acc = {bp}[_r * {G}];",
               f"for (int _g = 1; _g < {G}; ++_g) _acc = {comb('_acc', f'{bp}[_r * {G} + _g]')};"]
        if not out_shape:
            out.append(f"{ct} {name};")
            out += ["{", "  const int _r = 0;"] + ["  " + l for l in red] + [f"  {name} = {fin('_acc')};", "}"]
            self.vals[r] = Val("scalar", name)
        else:
            out.append(self.declare_reg(name, dt, out_shape))
            out += self.foreach(out_shape, ["const int _r = _e;"] + red + [f"{name}[_s] = {fin('_acc')};"])
            self.vals[r] = Val("reg", name)
        del u
        return out

    def op_cumsum(self, op):
        x = op.operands[0]
        dt = x.dtype
        ct = rtype(dt)

        def comb(prev, cur):
            if dt.is_float:
                return [f"({prev}) + ({cur})"]
            u = wide_unsigned(dt)
            return [f"({ct})(({u})({prev}) + ({u})({cur}))"]
        fin = (lambda e: self.rounded(e, dt)) if is_narrow(dt) else (lambda e: e)
        return self.scan_common(op, [x], comb, fin)

    def op_scan(self, op):
        region = op.regions[0]
        n = len(op.operands)
        fname = self.combine_function(region, n)
        cts = [rtype(v.dtype) for v in op.operands]

        def comb(prev, cur):
            # the running value is the left operand in both directions: a reverse scan is flip, scan, flip
            return (fname, prev, cur, cts)
        return self.scan_common(op, list(op.operands), comb, lambda e: e, multi=True)

    def combine_function(self, region, n):
        """Emit a scan's combine region as a C function of scalars; returns its name."""
        name = f"tk_combine_{len(self.combiners)}"
        saved = dict(self.vals)
        params = []
        for i, a in enumerate(region.args):
            pn = f"{'l' if i < n else 'r'}{i % n}"
            params.append(f"{rtype(a.dtype)} {pn}")
            self.vals[a] = Val("scalar", pn)
        lines = []
        for o in region.ops:
            if o.name == "yield":
                continue
            if o.name not in ELEMENTWISE and o.name != "const":
                raise EmitError(f"{self.d.name}: a scan combine function may only use elementwise ops, got {o.name}")
            lines += self.op(o)
        outs = region.terminator.operands
        params += [f"{rtype(v.dtype)}* o{i}" for i, v in enumerate(outs)]
        lines += [f"*o{i} = {self.vals[v].name};" for i, v in enumerate(outs)]
        self.combiners.append({"name": name, "params": params, "lines": lines, "qual": self.d.fn_qual})
        self.vals = {**saved, **{k: v for k, v in self.vals.items() if k not in saved}}
        return name

    def scan_common(self, op, xs, comb, fin, multi=False):
        """Blocked scan along ``axis``: each (line, segment) scans its segment in shared memory, one thread per
        line scans the segment totals, then every segment but the first folds in its prefix."""
        axis, rev = op.attrs["axis"], op.attrs["reverse"]
        shape = tuple(xs[0].shape)
        L = shape[axis]
        N = prod(shape)
        lines_n = N // L
        G = 1
        while G * 2 <= L and lines_n * G * 2 <= self.T and (L // (G * 2)) >= 2:
            G *= 2
        SL = L // G
        cts = [rtype(x.dtype) for x in xs]
        sizes = [N * self.d.sizeof(c) for c in cts] + ([lines_n * G * self.d.sizeof(c) for c in cts] if G > 1 else [])
        offs = self.smem_alloc(sizes)
        out = []
        bufs = [self.fresh("scan") for _ in xs]
        for b, c, o in zip(bufs, cts, offs):
            out.append(f"{self.d.local_ptr(c)} {b} = {self.smem_ptr(c, o)};")
        prefs = []
        if G > 1:
            prefs = [self.fresh("pref") for _ in xs]
            for b, c, o in zip(prefs, cts, offs[len(xs):]):
                out.append(f"{self.d.local_ptr(c)} {b} = {self.smem_ptr(c, o)};")
        self.barrier(out)
        for x, b in zip(xs, bufs):
            self.to_smem(x, b, out)
        self.barrier(out)
        inner = strides(shape)[axis]
        # flat index of position j (processing order) on line l
        def pos(j):
            k = f"({L - 1} - ({j}))" if rev else f"({j})"
            return f"_lb + {k} * {inner}"
        line_base = f"((_l / {inner}) * {L * inner} + (_l % {inner}))"

        def combine_into(dst_idx_exprs, prev_exprs, cur_exprs):
            """Lines: dst = comb(prev, cur) for each scanned value."""
            c = comb(prev_exprs[0], cur_exprs[0]) if not multi else comb(prev_exprs, cur_exprs)
            if not multi:
                return [f"{dst_idx_exprs[0]} = {c[0]};"]
            fname, left, right, tys = c
            tmp = [f"_n{i}" for i in range(len(xs))]
            return (["{"] + [f"  {tys[i]} {tmp[i]};" for i in range(len(xs))]
                    + [f"  {fname}({', '.join(list(left) + list(right) + ['&' + t for t in tmp])});"]
                    + [f"  {dst_idx_exprs[i]} = {tmp[i]};" for i in range(len(xs))] + ["}"])

        def par_loop(total, body):
            ppt = -(-total // self.T)
            ls = [f"for (int _q = 0; _q < {ppt}; ++_q) {{", f"  const int _p = _q * {self.T} + tk_tid;"]
            if total % self.T:
                ls += [f"  if (_p < {total}) {{"] + ["    " + l for l in body] + ["  }"]
            else:
                ls += ["  " + l for l in body]
            return ls + ["}"]
        # stage 1: sequential scan within each segment
        s1 = [f"const int _l = _p >> {log2(G)};", f"const int _g = _p & {G - 1};", f"const int _lb = {line_base};",
              f"for (int _j = _g * {SL} + 1; _j < (_g + 1) * {SL}; ++_j) {{"]
        s1 += ["  " + l for l in combine_into([f"{b}[{pos('_j')}]" for b in bufs],
                                              [f"{b}[{pos('_j - 1')}]" for b in bufs],
                                              [f"{b}[{pos('_j')}]" for b in bufs])]
        s1 += ["}"]
        out += par_loop(lines_n * G, s1)
        if G > 1:
            self.barrier(out)
            # stage 2: exclusive prefixes of the segment totals, one thread per line
            run = [f"_run{i}" for i in range(len(xs))]
            s2 = [f"const int _l = _p;", f"const int _lb = {line_base};"]
            s2 += [f"{cts[i]} {run[i]} = {bufs[i]}[{pos(SL - 1)}];" for i in range(len(xs))]
            s2 += [f"for (int _g = 1; _g < {G}; ++_g) {{"]
            s2 += [f"  {prefs[i]}[_l * {G} + _g] = {run[i]};" for i in range(len(xs))]
            s2 += ["  " + l for l in combine_into(run, run, [f"{bufs[i]}[{pos(f'_g * {SL} + {SL - 1}')}]"
                                                             for i in range(len(xs))])]
            s2 += ["}"]
            out += par_loop(lines_n, s2)
            self.barrier(out)
            # stage 3: fold each segment's prefix into its elements
            s3 = [f"const int _l = _p >> {log2(G)};", f"const int _g = _p & {G - 1};", f"const int _lb = {line_base};",
                  "if (_g > 0) {", f"  for (int _j = _g * {SL}; _j < (_g + 1) * {SL}; ++_j) {{"]
            s3 += ["    " + l for l in combine_into([f"{b}[{pos('_j')}]" for b in bufs],
                                                    [f"{p}[_l * {G} + _g]" for p in prefs],
                                                    [f"{b}[{pos('_j')}]" for b in bufs])]
            s3 += ["  }", "}"]
            out += par_loop(lines_n * G, s3)
        self.barrier(out)
        for r, b in zip(op.results, bufs):
            name = self.name_of(r)
            out.append(self.declare_reg(name, r.dtype, shape))
            out += self.foreach(shape, [f"{name}[_s] = {fin(f'{b}[_e]')};"])
            self.vals[r] = Val("reg", name)
        return out

    # -- matmul --
    def op_mma(self, op):
        out = self.d.mma(self, op)
        if out is not None:
            return out
        self.matrix_ops.append("fma")
        return self.mma_fma(op)

    def mma_fma(self, op):
        """acc + a @ b as a k-outer FMA loop over shared-memory operands (each thread its own acc elements)."""
        a, b, acc = op.operands
        r = op.results[0]
        (M, K), N = a.shape, b.shape[1]
        act, bct = rtype(a.dtype), rtype(b.dtype)
        rct = rtype(r.dtype)
        oa, ob = self.smem_alloc([M * K * self.d.sizeof(act), K * N * self.d.sizeof(bct)])
        out = []
        sa, sb = self.fresh("mma_a"), self.fresh("mma_b")
        out.append(f"{self.d.local_ptr(act)} {sa} = {self.smem_ptr(act, oa)};")
        out.append(f"{self.d.local_ptr(bct)} {sb} = {self.smem_ptr(bct, ob)};")
        self.barrier(out)
        self.to_smem(a, sa, out)
        self.to_smem(b, sb, out)
        self.barrier(out)
        name = self.name_of(r)
        out.append(self.declare_reg(name, r.dtype, r.shape))
        out += self.foreach(r.shape, [f"{name}[_s] = {self.at(acc, self.coords_list(r.shape), r.shape)};"])
        if r.dtype.is_float:
            upd = f"{name}[_s] = {name}[_s] + ({rct}){sa}[_c0 * {K} + _k] * ({rct}){sb}[_k * {N} + _c1];"
        else:
            upd = (f"{name}[_s] = ({rct})((unsigned){name}[_s] + (unsigned)((int){sa}[_c0 * {K} + _k] * "
                   f"(int){sb}[_k * {N} + _c1]));")
        out += [f"for (int _k = 0; _k < {K}; ++_k) {{"] + ["  " + l for l in self.foreach(r.shape, [upd])] + ["}"]
        self.vals[r] = Val("reg", name)
        return out

    # -- control flow --
    def declare_like(self, v, name):
        if v.shape == ():
            return f"{rtype(v.dtype)} {name};"
        return self.declare_reg(name, v.dtype, v.shape)

    def assign(self, dst_name, src, out):
        """Lines copying value ``src`` into the variable/array ``dst_name`` (of src's shape)."""
        if src.shape == ():
            out.append(f"{dst_name} = {self.vals[src].name};")
            return
        cs = self.coords_list(src.shape)
        out += self.foreach(src.shape, [f"{dst_name}[_s] = {self.at(src, cs, src.shape)};"])

    def op_for(self, op):
        body = op.regions[0]
        out = []
        carried = []
        for res, arg, init in zip(op.results, body.args[1:], op.operands[3:]):
            name = self.fresh(res.name or arg.name or "carry")
            out.append(self.declare_like(res, name))
            self.assign(name, init, out)
            kind = "scalar" if res.shape == () else "reg"
            self.vals[res] = Val(kind, name)
            self.vals[arg] = Val(kind, name)
            carried.append(name)
        start, stop, step = (self.vals[v].name for v in op.operands[:3])
        iv = body.args[0]
        ivn = self.name_of(iv)
        self.vals[iv] = Val("scalar", ivn)
        sv = op.operands[2]
        if sv.owner is not None and sv.owner.name == "const":
            cond = f"{ivn} < {stop}" if sv.owner.attrs["value"] > 0 else f"{ivn} > {stop}"
        else:
            cond = f"({step} > 0 ? {ivn} < {stop} : {ivn} > {stop})"
        self.scopes.append({})
        inner = self.block(body)
        inner += self.yield_into(body.terminator.operands, carried, body.args[1:])
        self.scopes.pop()
        out.append(f"for (int {ivn} = {start}; {cond}; {ivn} += {step}) {{")
        out += ["  " + l for l in inner]
        out.append("}")
        return out

    def yield_into(self, values, names, args):
        out = []
        direct, staged = [], []
        for v, n, a in zip(values, names, args):
            if v is a:
                continue
            k = self.vals[v]
            hazard = k.kind == "virtual" or (k.name in names and k.name != n)
            (staged if hazard else direct).append((v, n))
        temps = []
        for v, n in staged:
            t = self.fresh("next")
            out.append(self.declare_like(v, t))
            self.assign(t, v, out)
            temps.append((t, n, v))
        for v, n in direct:
            if self.vals[v].kind == "reg" and self.vals[v].name == n:
                continue
            self.assign(n, v, out)
        for t, n, v in temps:
            if v.shape == ():
                out.append(f"{n} = {t};")
            else:
                out += self.foreach(v.shape, [f"{n}[_s] = {t}[_s];"])
        return out

    def op_if(self, op):
        out = []
        names = []
        for res in op.results:
            name = self.name_of(res)
            out.append(self.declare_like(res, name))
            self.vals[res] = Val("scalar" if res.shape == () else "reg", name)
            names.append(name)
        cond = self.vals[op.operands[0]].name
        bodies = []
        for region in op.regions:
            self.scopes.append({})
            inner = self.block(region)
            for v, n in zip(region.terminator.operands, names):
                self.assign(n, v, inner)
            self.scopes.pop()
            bodies.append(inner)
        if self.d.pad_branch_barriers and len(bodies) == 2:
            # Both branches pass the same barriers: PoCL races (under load, across work-groups) when one side
            # of a uniform branch has barriers and the other has none. The extra barriers cost nothing else.
            counts = [sum(l.count(self.d.barrier) for l in b) for b in bodies]
            for i, b in enumerate(bodies):
                if counts[i] < max(counts):
                    bodies[i] = [self.d.barrier] * (max(counts) - counts[i]) + b
        for i, inner in enumerate(bodies):
            out.append(f"if ({cond}) {{" if i == 0 else "} else {")
            out += ["  " + l for l in inner]
        out.append("}")
        if self.d.pad_branch_barriers and any(self.d.barrier in l for b in bodies for l in b):
            # And a barrier where the branches join. Without it PoCL (3.0 and 3.1, pthread device) sometimes
            # let a work-group read branch results (registers assigned after the branch's last barrier) that
            # were wrong: whole tiles, only with more than one worker thread, and every time with
            # POCL_AFFINITY=1. tests/test_opencl_corpus.py's matmul epilogue reproduced it.
            out.append(self.d.barrier)
        return out


def emit(fn, kernel_name, dialect, num_warps=None, vec=None):
    """(source, emitter) for ``fn`` in ``dialect``; the emitter keeps the launch facts (threads, smem)."""
    e = CEmitter(fn, kernel_name, dialect, num_warps, vec)
    return e.emit(), e
