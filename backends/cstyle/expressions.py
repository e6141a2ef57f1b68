"""Elementwise expressions (spelled from ``tilekit/optable.py``, plus the integer/bool overrides C needs)
and the layout-only ops (broadcast, expand_dims, reshape, ``.T``)."""
from __future__ import annotations

from ... import dtypes as D
from ...optable import BINARY, COMPARE, UNARY, c_spelling
from .types import float_lit, is_narrow, literal, round_fn, rtype, wide_unsigned
from .values import EmitError, Val

VIRTUAL_COST_LIMIT = 48  # expression nodes a virtual tile may expand to before it is materialized


class ExpressionsMixin:
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

    def op_reshape(self, op):
        x, r = op.operands[0], op.results[0]
        if r.shape == () and x.shape != ():
            return self.scalar_of_tile(x, r)
        return self.op_expand_dims(op)

    def scalar_of_tile(self, x, r):
        """The scalar a 1-element tile holds (``.reshape(())``). Every thread needs it, while a register
        tile's only element lives in thread 0: it goes through the scratch area."""
        k = self.vals[x]
        if k.kind == "scalar":  # a uniform 1-element tile (e.g. a 1-element load): already in every thread
            self.vals[r] = Val("scalar", k.name)
            return []
        name = self.name_of(r)
        self.vals[r] = Val("scalar", name)
        if k.kind == "virtual":
            return [f"const {rtype(r.dtype)} {name} = {self.vexpr(x, ['0'] * len(x.shape))};"]
        ct = rtype(x.dtype)
        (off,) = self.smem_alloc([self.d.sizeof(ct)])
        buf = self.fresh("sm")
        out = [f"{self.d.local_ptr(ct)} {buf} = {self.smem_ptr(ct, off)};"]
        self.barrier(out)
        self.to_smem(x, buf, out)
        self.barrier(out)
        out.append(f"const {ct} {name} = {buf}[0];")
        return out

    def op_slice(self, op):
        x, r = op.operands[0], op.results[0]
        k = self.vals[x]
        if k.kind in ("virtual", "scalar"):
            self.vals[r] = Val(k.kind, k.name)
            return []
        axis, start = op.attrs["axis"], op.attrs["start"]

        def src(cs):
            return self.flat_expr([f"({c} + {start})" if d == axis else c for d, c in enumerate(cs)], x.shape)
        out = []
        self.vals[r] = Val("reg", self.smem_gather(x, r.shape, src, (x.name or "s") + "_sl", out))
        return out

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
        if k == "neg":
            return f"(-({a}))"
        spelling = UNARY[k].c
        if spelling is None:
            raise EmitError(f"unary {k}")
        expr = c_spelling(spelling, {"x": a}, self.d.math_name, lambda x: float_lit(x, dt))
        return expr if k == "abs" else self.rounded(expr, dt)  # |x| of a rounded value is already rounded

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
        if k in COMPARE:
            return f"(({a}) {COMPARE[k][0]} ({b}))"
        ct = rtype(dt)
        if dt.is_bool:
            return {"and": f"(({a}) && ({b}))", "or": f"(({a}) || ({b}))", "xor": f"(({a}) != ({b}))",
                    "maximum": f"(({a}) || ({b}))", "minimum": f"(({a}) && ({b}))"}[k]
        if dt.is_float:
            if k in ("add", "sub", "mul", "div"):
                return self.rounded(f"(({a}) {BINARY[k].symbol} ({b}))", dt)
            m = self.d.math_name
            if k == "floordiv":
                return self.rounded(f"{m('floor')}(({a}) / ({b}))", dt)
            if k == "mod":
                return self.rounded(f"{m('fmod')}({a}, {b})", dt)
            if k == "pow":
                return self.rounded(f"{m('pow')}({a}, {b})", dt)
            if k in ("maximum", "minimum"):
                return f"{self.float_helper(k[:3], dt)}({a}, {b})"
            raise EmitError(f"binary {k} on {dt}")
        u = wide_unsigned(dt)
        if k in ("add", "sub", "mul"):  # wrap: computed unsigned (signed overflow is undefined in C)
            return f"(({ct})(({u})({a}) {BINARY[k].symbol} ({u})({b})))"
        if k in ("and", "or", "xor"):
            return f"(({ct})(({a}) {BINARY[k].symbol} ({b})))"
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
            self.need(name, f"{self.d.fn_qual} {dct} {name}({sct} x) {{ double y = trunc({self.d.to_double(self, 'x')}); "
                            f"if (y != y || isinf(y)) return ({dct})0; "
                            f"if (y <= {float(lo)!r}) return ({dct}){literal(lo, dst)}; "
                            f"if (y >= {float(hi)!r}) return ({dct}){literal(hi, dst)}; return ({dct})y; }}")
            return f"{name}({a})"
        return f"(({dct})({a}))" if sct != dct else a
