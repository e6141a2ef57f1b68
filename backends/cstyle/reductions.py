"""Reductions and scans through shared memory: grouped partial reductions; blocked scans (per-segment
scan, segment totals, prefix fold) for cumsum and ``tk.associative_scan`` combiners."""
from __future__ import annotations

from ...optable import ELEMENTWISE_OPS, REDUCE
from .types import is_narrow, rtype, wide_unsigned
from .layout import log2, prod, strides
from .values import EmitError, Val


class ReductionsMixin:
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
            return self.binary_expr(REDUCE[kind].binary, a, b, dt)
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
            if o.name not in ELEMENTWISE_OPS and o.name != "const":
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
