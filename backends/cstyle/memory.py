"""Global memory: addresses and edge masks, element and vector loads/stores, packed (sub-byte) decoding,
stores and atomic read-modify-writes."""
from __future__ import annotations

from ... import dtypes as D
from ...analysis import is_nonnegative, known_multiple
from ...packing import WordWindow
from ...ir import offsets_and_mask
from .layout import prod
from .types import float_lit, rtype
from .values import Val


class MemoryMixin:
    def address(self, op, shape, out, coords_fn=None):
        """Per-element address pieces for a load/store of a ``shape`` tile.

        Returns (index exprs per dim, mask exprs, subst) using ``_c<d>`` coordinates and slot ``_s``."""
        tensor, offs, _, mask = offsets_and_mask(op)
        t = self.tensor_name(tensor)
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

    def uniform_load_ok(self, op):
        """A 1-element load every thread can issue itself: its address and mask are uniform."""
        _, offs, _, mask = offsets_and_mask(op)
        ins = [o for o in offs if o.shape != ()] + ([mask] if mask is not None else [])
        return prod(op.attrs["shape"]) == 1 and all(self.vals[v].kind in ("virtual", "scalar") for v in ins)

    def op_load(self, op):
        tensor, offs, other, mask = offsets_and_mask(op)
        r = op.results[0]
        shape = op.attrs["shape"]
        out = []
        if self.uniform_load_ok(op):
            return self.uniform_load(op)
        if tensor.type.packed and self.packed_window_ok(op):
            return self.packed_window_load(op)
        idx, masks, _ = self.address(op, shape, out)
        t = self.tensor_name(tensor)
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

    def uniform_load(self, op):
        """A 1-element tile loaded by every thread into one variable (held as a ``scalar``): a scalar
        ``tk.load`` costs no scratch-area round trip, and uses of it read the variable."""
        tensor, _, other, _ = offsets_and_mask(op)
        r = op.results[0]
        shape = op.attrs["shape"]
        out = []
        idx, masks, _ = self.address(op, shape, out)
        name = self.name_of(r)
        self.vals[r] = Val("scalar", name)
        if tensor.type.packed:
            val = self.packed_value(tensor, r.dtype, idx)
        else:
            t = self.tensor_name(tensor)
            val = self.load_elem(tensor.dtype, f"{t}_ptr[{self.linear(t, idx)}]")
        cond = " && ".join(f"({m})" for m in masks)
        coords = [f"const int _c{d} = 0;" for d in range(len(shape))]
        out.append(f"{rtype(r.dtype)} {name};")
        out += ["{", "  const int _s = 0;"] + ["  " + c for c in coords]
        out.append(f"  {name} = ({cond}) ? ({val}) : {self.vals[other].name};" if cond else f"  {name} = {val};")
        out.append("}")
        return out

    def vector_loop(self, op, shape, idx, masks, scalar_body, vector_load=None, vector_store=None):
        """The element loop of a load/store with a V-wide fast path for whole, aligned, in-bounds chunks."""
        tensor = op.operands[0]
        t = self.tensor_name(tensor)
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

    def packed_window_ok(self, op):
        """A packed tile whose columns start at one scalar offset, with no mask= and rows that every thread
        can address (scalar or virtual row offsets), stages its covering words (packing.WordWindow)."""
        _, offs, _, mask = offsets_and_mask(op)
        return (mask is None and offs[-1].shape == ()
                and all(o.shape == () or self.vals[o].kind == "virtual" for o in offs[:-1]))

    def packed_window_load(self, op):
        """The covering words of every row of the tile go to the scratch area in vector loads (16 bytes where
        aligned), then each thread shifts its codes out: ``bits / 8`` bytes read per weight, not 4-8."""
        tensor, offs, _, _ = offsets_and_mask(op)
        r = op.results[0]
        dt = r.dtype
        bits, shape = dt.bits, tuple(op.attrs["shape"])
        last = len(shape) - 1
        t = self.tensor_name(tensor)
        win = WordWindow(bits, shape[-1], known_multiple(offs[-1], self.owners))
        rows = prod(shape[:-1])
        nw = win.padded
        vw = min(4, nw, win.needed & -win.needed)  # whole vectors per row: int3's 6 words move as 3 pairs
        out = []
        idx, masks, _ = self.address(op, shape, out)  # the elements' edge masks
        (off,) = self.smem_alloc([rows * nw * 4])
        buf = self.fresh("pw")
        c0 = self.vals[offs[-1]].name
        w0, o0 = self.fresh("pw_w0"), self.fresh("pw_o0")
        out.append(f"{self.d.local_ptr('int')} {buf} = {self.smem_ptr('int', off)};")
        # first word and first bit of the tile in its row, without forming c0 * bits (no overflow)
        out.append(f"const int {w0} = ({c0} >> 5) * {bits} + ((({c0} & 31) * {bits}) >> 5);")
        out.append(f"const int {o0} = " + ("0;" if win.word_aligned else f"(({c0} & 31) * {bits}) & 31;"))
        wpr = f"{t}_wstride{last - 1}" if last else f"(({t}_shape0 * {bits} + 31) >> 5)"
        self.barrier(out)
        # staging: lane q moves words [q * vw, q * vw + vw) of the (rows..., nw) word tile
        wshape = shape[:-1] + (nw,)
        row_idx, row_ok = [], []
        for d in range(last):
            o = offs[d]
            if o.shape == ():
                i = f"({self.vals[o].name} + _c{d})"
                row_ok.append(f"{i} < {t}_shape{d}")
                if not is_nonnegative(o, self.owners):
                    row_ok.append(f"{i} >= 0")
            else:
                i = f"({self.vexpr(o, [f'_c{d}'])})"  # gathered rows are trusted, as elsewhere
            row_idx.append(i)
        base = " + ".join([f"(tk_i64)({i}) * {t}_wstride{d}" for d, i in enumerate(row_idx)] or ["(tk_i64)0"])
        word = f"({w0} + _c{last})"
        neg = [] if is_nonnegative(offs[-1], self.owners) else [f"{word} >= 0"]
        lanes = rows * nw // vw
        body = [f"const int _e = _q * {vw};"] + self.coords(wshape)
        body.append(f"const tk_i64 _row = {base};")
        ok = row_ok + neg
        scalar = [f"for (int _k = 0; _k < {vw}; ++_k) {{",
                  f"  const bool _in = " + " && ".join([f"({c})" for c in ok]
                                                      + [f"({word} + _k < {wpr})", f"(_c{last} + _k < {win.needed})"]) + ";",
                  f"  {buf}[_e + _k] = _in ? {t}_ptr[_row + {word} + _k] : 0;", "}"]
        if vw > 1 and self.d.vector_type(D.int32, vw) is not None:
            ptr = f"({t}_ptr + _row + {word})"
            fast = ok + [f"{word} + {vw} <= {wpr}", f"_c{last} + {vw} <= {win.needed}"]
            if self.d.vector_needs_alignment:
                fast.append(f"(((tk_uptr){ptr}) % {self.d.vector_align(D.int32, vw)}) == 0")
            vec = self.d.vload(D.int32, vw, ptr, [f"{buf}[_e + {k}]" for k in range(vw)])
            body += [f"if ({' && '.join(f'({c})' for c in fast)}) {{"] + ["  " + l for l in vec] + ["} else {"] + \
                ["  " + l for l in scalar] + ["}"]
        else:
            body += scalar
        out += [f"for (int _q = tk_tid; _q < {lanes}; _q += {self.T}) {{"] + ["  " + l for l in body] + ["}"]
        self.barrier(out)
        # extraction: each element's code from the staged words, shifted out in registers
        rowflat = self.flat_expr([f"_c{d}" for d in range(last)], shape[:-1]) if last else "0"
        m = (1 << bits) - 1
        unguarded = self.d.unguarded_window_extract
        word = f"({rowflat}) * {nw} + (_rel >> 5)"
        ext = [f"const int _rel = {o0} + _c{last} * {bits};",
               f"const int _wb = {f'_live ? {word} : 0' if unguarded else word};",
               "const unsigned _sh = (unsigned)(_rel & 31);",
               f"unsigned _code = (unsigned){buf}[_wb] >> _sh;"]
        if win.straddles:
            ext.append(f"if (_sh + {bits} > 32) _code |= (unsigned){buf}[_wb + 1] << (32 - _sh);")
        code = f"(int)(_code & {m}u)"
        cond = " && ".join(f"({c})" for c in masks)
        val = self.decode_code(dt, code)
        name = self.name_of(r)
        self.vals[r] = Val("reg", name)
        out.append(self.declare_reg(name, dt, shape))
        ext.append(f"{name}[_s] = ({cond}) ? ({val}) : ({self.decode_code(dt, '0')});" if cond else f"{name}[_s] = {val};")
        return out + self.foreach(shape, ext, unguarded=unguarded)

    def packed_value(self, tensor, dt, idx):
        """Expression decoding one element of a packed tensor (dense little-endian bits per row, rows on
        int32 word boundaries, as tilekit/packing.py lays it out)."""
        t = self.tensor_name(tensor)
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
        return self.decode_code(dt, code)

    def decode_code(self, dt, code):
        """C expression of the value of the code expression ``code`` (dtypes.CodeRule)."""
        fq = self.d.fn_qual
        rule = D.code_rule(dt)  # the decode rule, rendered in C: one helper per small-float format
        if not rule.is_float:
            sb = rule.sign_bit
            return f"(({code} ^ {sb}) - {sb})" if sb else code
        special = {"ieee": f"if (e == {rule.exp_mask}) v = (m == 0) ? TK_INF : TK_NAN; ",
                   "nan_at_max": f"if (e == {rule.exp_mask} && m == {rule.man_mask}) v = TK_NAN; ",
                   "none": ""}[rule.special]
        name = self.need(f"tk_decode_{dt.name}", (
            f"{fq} float tk_decode_{dt.name}(int code) {{ "
            f"float sign = (code & {rule.sign_bit}) ? -1.0f : 1.0f; int e = (code >> {rule.exp_shift}) & {rule.exp_mask}; "
            f"int m = code & {rule.man_mask}; float v; "
            f"if (e == 0) v = (float)m * {float_lit(rule.subnormal_scale, D.float32)}; "
            f"else v = tk_u2f(((unsigned)(e + {rule.f32_exp_offset}) << 23) | ((unsigned)m << {rule.f32_man_shift})); "
            f"{special}return sign * v; }}"))
        return f"{name}({code})"

    def store_like(self, op):
        tensor, _, value, _ = offsets_and_mask(op)
        shape = value.shape
        out = [self.d.barrier] if self.d.barrier_before_loop_stores and self.loop_depth else []
        idx, masks, subst = self.address(op, shape, out)
        if value.shape != () and self.vals[value].kind == "reg" and tuple(value.shape) != tuple(shape):
            subst[value] = self.broadcast_reg(value, shape, out)
        t = self.tensor_name(tensor)
        val = self.at(value, self.coords_list(shape), shape, subst=subst)
        cond = " && ".join(f"({m})" for m in masks)
        addr = self.linear(t, idx)
        if op.name == "store":
            stmt = f"{t}_ptr[{addr}] = {self.store_elem(tensor.dtype, val)};"
        else:
            stmt = self.d.atomic_rmw(self, op.attrs["kind"], tensor.dtype, f"({t}_ptr + {addr})", val) + ";"
        body = [f"if ({cond}) {stmt}" if cond else stmt]
        if op.name == "store" and self.vector_ok(op, shape, tensor.dtype) and not subst:
            return out + self.vector_loop(op, shape, idx, masks, body, vector_store=(value, tensor.dtype))
        return out + self.foreach(shape, body)

    op_store = store_like

    op_atomic_rmw = store_like
