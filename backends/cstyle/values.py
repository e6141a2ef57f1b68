"""Values: how an IR value is held (scalar, virtual, reg), its C expression at an element, and moving
tiles between threads through the shared scratch area (materialize, broadcast, gather)."""
from __future__ import annotations

from ...optable import ELEMENTWISE_OPS
from .types import rtype
from .layout import prod


class Val:
    __slots__ = ("kind", "name")

    def __init__(self, kind, name=None):
        self.kind = kind
        self.name = name

    def __repr__(self):
        return f"Val({self.kind}, {self.name})"


class EmitError(NotImplementedError):
    pass


class ValuesMixin:
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
        if v.shape == () or k.kind == "scalar":  # a scalar, or a 1-element tile every thread holds
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
        if n == "slice":
            a, start = op.attrs["axis"], op.attrs["start"]
            return self.vexpr(op.operands[0], [f"({c} + {start})" if d == a else c for d, c in enumerate(cs)])
        if n in ELEMENTWISE_OPS:
            args = []
            for o in op.operands:
                if o.shape == ():
                    args.append(self.vals[o].name)
                else:
                    args.append(self.vexpr(o, [c if o.shape[d] != 1 else "0" for d, c in enumerate(cs)]))
            return self.scalar_expr(op, args)
        raise EmitError(f"internal: {n} cannot be virtual")

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
