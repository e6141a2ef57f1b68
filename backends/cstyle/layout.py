"""Where tile elements live: the register layout (``V``-element chunks dealt round-robin to ``T`` threads),
coordinates of a flat index, and the per-thread element loop every other concern emits through."""
from __future__ import annotations


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


class LayoutMixin:
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

    def foreach(self, shape, body, unguarded=False):
        """Lines running ``body`` (lines using ``_s`` slot, ``_e`` flat index, ``_c<d>`` coordinates) for every
        element of a ``shape`` tile this thread owns. ``unguarded``: every thread runs ``body``, which reads
        ``_live`` (whether the element is the tile's) instead of being skipped past the last chunk."""
        v, chunks, ptc, _, guard = self.layout(shape)
        u = self.d.unroll
        inner = [f"const int _s = _i * {v} + _j;", f"const int _e = _ch * {v} + _j;"]
        inner += self.coords(shape) + body
        lines = [u, f"for (int _i = 0; _i < {ptc}; ++_i) {{", f"  const int _ch = _i * {self.T} + tk_tid;"]
        pad = "  "
        if unguarded:
            lines.append(f"  const bool _live = {f'_ch < {chunks}' if guard else 'true'};")
            guard = False
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
