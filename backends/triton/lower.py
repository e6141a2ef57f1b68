"""Tile IR -> Triton source. Each IR op becomes one Triton statement; regions become Python
``for``/``if`` blocks whose loop-carried values and results are reassigned variables, as Triton expects."""
from __future__ import annotations

import math

from ... import __version__
from ... import dtypes as D
from ...analysis import implies_row_bound, is_nonnegative, known_multiple, loop_owners, mask_row_bounds
from ...packing import WordWindow
from ...ir import offsets_and_mask, walk
from .. import naming, toolchain
from ..templating import render
from ...optable import ATOMIC_RMW, BINARY, COMPARE, REDUCE, UNARY, Trait, has


_TRITON_COMPILES_WORD_WINDOW = toolchain.triton_series() >= (3, 9)


def tl_dtype(dt: D.DType) -> str:
    """The Triton type a tile of ``dt`` is held in (sub-byte ints in int32, small floats in float32)."""
    if dt.is_bool:
        return "tl.int1"
    if dt.is_packed:
        return "tl.float32" if dt.is_float else "tl.int32"
    return {"float16": "tl.float16", "bfloat16": "tl.bfloat16", "float32": "tl.float32", "float64": "tl.float64",
            "int8": "tl.int8", "int16": "tl.int16", "int32": "tl.int32", "int64": "tl.int64",
            "uint8": "tl.uint8", "uint16": "tl.uint16", "uint32": "tl.uint32"}[dt.name]


def literal(value, dt):
    if dt.is_bool:
        return "True" if value else "False"
    if dt.is_float:
        if math.isinf(value):
            return 'float("inf")' if value > 0 else '-float("inf")'
        if math.isnan(value):
            return 'float("nan")'
        return repr(float(value))
    return str(int(value))


def tensor_param_names(p):
    """The Triton parameters one tilekit tensor parameter expands to, in order (see backends/naming.py)."""
    rank = p.value.type.rank
    t = naming.tensor_base(p.name)
    names = [f"{t}_ptr"] + [f"{t}_shape{d}" for d in range(rank)]
    if p.value.type.packed:
        names += [f"{t}_wstride{d}" for d in range(rank - 1)]
    else:
        names += [f"{t}_stride{d}" for d in range(rank)]
    return names


def scalar_param_name(p):
    """The Triton parameter a tilekit scalar parameter becomes."""
    return naming.scalar_param(p.name)


def function_name(kernel_name):
    """The generated module's kernel function (Triton names the compiled kernel and its cache files after it)."""
    return naming.kernel_symbol(kernel_name)


_NARROW = ("float16", "bfloat16")
# Python infix operators Triton gives C semantics (``//``, ``%`` and ``/`` are spelled below).
_BINARY_SYMBOL = {**{k: b.symbol for k, b in BINARY.items() if b.symbol and k not in ("div", "floordiv", "mod")},
                  **{k: sym for k, (sym, _) in COMPARE.items()}}


class TritonEmitter:
    def __init__(self, fn, kernel_name):
        self.fn = fn
        self.kernel_name = kernel_name
        self.names = {}
        self.counter = 0
        self.helpers = []
        self.owners = loop_owners(fn)
        self.params = {}

    def name(self, v):
        n = self.names.get(v)
        if n is None:
            n = self.fresh(v.name)
            self.names[v] = n
        return n

    def fresh(self, hint=""):
        n = naming.local(self.counter, hint)
        self.counter += 1
        return n

    @staticmethod
    def tensor(v):
        """The prefix of a tensor parameter's Triton parameters (``<prefix>_ptr``, ``_shape<d>``, ...)."""
        return naming.tensor_base(v.name)

    def emit(self) -> str:
        params = []
        for p in self.fn.params:
            if p.kind == "tensor":
                params += tensor_param_names(p)
                self.names[p.value] = self.tensor(p.value)
            else:
                params.append(scalar_param_name(p))
                self.names[p.value] = scalar_param_name(p)
        lines = self.shared_layouts() + self.block(self.fn.body)
        origin = str(self.fn.loc) if self.fn.loc else "?"
        return render("module.py.j2",
            version=__version__, origin=origin, kernel_name=self.kernel_name, name=function_name(self.kernel_name),
            constexprs=", ".join(f"{k}={v!r}" for k, v in self.fn.constexprs.items()) or "none",
            params=params, lines=lines or ["pass"], helpers=self.helpers)

    def shared_layouts(self):
        """A tensor whose sizes or strides equal an earlier one's at launch reads that one's parameters, so
        that Triton computes their masks and offsets once."""
        lines = []
        for p in self.fn.params:
            t = p.value.type if p.kind == "tensor" else None
            if t is None or t.packed:
                continue
            mine = self.tensor(p.value)
            for kind, other in (("shape", t.shape_of), ("stride", t.strides_of)):
                if other is not None:
                    theirs = naming.tensor_base(other)
                    lines += [f"{mine}_{kind}{d} = {theirs}_{kind}{d}" for d in range(t.rank)]
        return lines

    # -- blocks and region ops --
    def block(self, block):
        lines = []
        for op in block.ops:
            if op.name == "yield":
                continue
            lines += self.op(op)
        return lines

    def bind_all(self, targets, values):
        if not targets:
            return []
        return [f"{', '.join(targets)} = {', '.join(values)}"]

    def op(self, op):
        n = op.name
        if n == "for":
            return self.for_op(op)
        if n == "if":
            return self.if_op(op)
        if has(n, Trait.WRITES_MEMORY):
            return self.store(op)
        expr = getattr(self, "e_" + n)(op)
        return [f"{self.name(op.results[0])} = {expr}"] if isinstance(expr, str) else expr

    def for_op(self, op):
        body = op.regions[0]
        carried = [self.name(r) for r in op.results]
        for a, nm in zip(body.args[1:], carried):
            self.names[a] = nm
        iv = self.name(body.args[0])
        start, stop, step = (self.name(v) for v in op.operands[:3])
        lines = self.bind_all(carried, [self.name(v) for v in op.operands[3:]])
        # scheduling hints for Triton's software pipeliner / warp specializer; other backends ignore them
        hints = [f"num_stages={op.attrs['stages']}"] if op.attrs.get("stages") else []
        if op.attrs.get("warp_specialize"):
            hints.append("warp_specialize=True")
        rng = (f"tl.range({start}, {stop}, {step}, {', '.join(hints)})" if hints
               else f"range({start}, {stop}, {step})")
        inner = self.block(body) + self.bind_all(carried, [self.name(v) for v in body.terminator.operands])
        return lines + [f"for {iv} in {rng}:"] + ["    " + l for l in (inner or ["pass"])]

    def if_op(self, op):
        results = [self.name(r) for r in op.results]
        out = [f"if {self.name(op.operands[0])}:"]
        for i, region in enumerate(op.regions):
            inner = self.block(region) + self.bind_all(results, [self.name(v) for v in region.terminator.operands])
            if i == 1:
                out.append("else:")
            out += ["    " + l for l in (inner or ["pass"])]
        return out

    # -- elementwise --
    def e_const(self, op):
        dt = op.attrs["dtype"]
        return f"tl.full([], {literal(op.attrs['value'], dt)}, {tl_dtype(dt)})"

    def e_program_id(self, op):
        return f"tl.program_id({op.attrs['axis']})"

    def e_num_programs(self, op):
        return f"tl.num_programs({op.attrs['axis']})"

    def e_dim(self, op):
        return f"{self.tensor(op.operands[0])}_shape{op.attrs['axis']}"

    def e_arange(self, op):
        return f"tl.arange(0, {op.attrs['n']})"

    def e_full(self, op):
        v = op.operands[0]
        if v.owner is not None and v.owner.name == "const":
            return f"tl.full({list(op.attrs['shape'])}, {literal(v.owner.attrs['value'], v.dtype)}, {tl_dtype(v.dtype)})"
        return f"tl.broadcast_to({self.name(v)}, {list(op.attrs['shape'])})"

    def e_unary(self, op):
        x = self.name(op.operands[0])
        k = op.attrs["op"]
        dt = op.results[0].dtype
        if k == "neg":
            return f"-{x}"
        if k == "not":
            return f"({x} == 0)"
        if k == "invert":
            return f"~{x}"
        if k == "abs" and not dt.is_float:
            return f"tl.abs({x})"
        narrow = dt.name in _NARROW
        xf = f"{x}.to(tl.float32)" if narrow else x
        expr = UNARY[k].triton.format(x=xf)
        return f"({expr}).to({tl_dtype(dt)})" if narrow else expr

    def e_binary(self, op):
        a, b = (self.name(v) for v in op.operands)
        k = op.attrs["op"]
        dt = op.operands[0].dtype
        if k in _BINARY_SYMBOL:
            return f"{a} {_BINARY_SYMBOL[k]} {b}"
        if k in ("maximum", "minimum"):
            return f"tl.{k}({a}, {b})"
        if k == "div":
            if dt.name in _NARROW:
                return f"({a}.to(tl.float32) / {b}.to(tl.float32)).to({tl_dtype(dt)})"
            return f"{a} / {b}"
        if k == "floordiv":
            return f"tl.floor({a} / {b})" if dt.is_float else f"{a} // {b}"
        if k == "mod":
            return f"{a} % {b}"
        raise NotImplementedError(f"triton: binary {k}")

    e_cmp = e_binary

    def e_where(self, op):
        return "tl.where({}, {}, {})".format(*(self.name(v) for v in op.operands))

    def e_cast(self, op):
        x = op.operands[0]
        dst = op.attrs["dtype"]
        if dst.is_bool:
            return f"{self.name(x)} != 0"
        if tl_dtype(x.dtype) == tl_dtype(dst):
            return self.name(x)
        if x.owner is None and x.shape == ():
            # a scalar parameter: the interpreter passes a Python number, which has no .to()
            return f"tl.cast({self.name(x)}, {tl_dtype(dst)})"
        return f"{self.name(x)}.to({tl_dtype(dst)})"

    def e_broadcast(self, op):
        x = op.operands[0]
        if x.shape == () and x.dtype.is_bool:
            # Triton's interpreter rejects a load mask made by tl.broadcast_to of a scalar int1 ("mask has
            # unsupported dtype"); and-ing it into a full tile is the same value on every backend.
            return f"tl.full({list(op.attrs['shape'])}, True, tl.int1) & {self.name(x)}"
        return f"tl.broadcast_to({self.name(x)}, {list(op.attrs['shape'])})"

    def e_expand_dims(self, op):
        return f"tl.expand_dims({self.name(op.operands[0])}, {op.attrs['axis']})"

    def e_reshape(self, op):
        return f"tl.reshape({self.name(op.operands[0])}, {list(op.attrs['shape'])})"

    def e_slice(self, op):
        # Triton tensors have no static slice: a gather along the axis with constant indices
        x = op.operands[0]
        axis, start, size = op.attrs["axis"], op.attrs["start"], op.attrs["size"]
        shape = list(op.results[0].shape)
        rank = len(shape)
        pos = f"(tl.arange(0, {size}) + {start})"
        if rank > 1:
            pos += "[" + ", ".join(":" if d == axis else "None" for d in range(rank)) + "]"
            pos = f"tl.broadcast_to({pos}, {shape})"
        return f"tl.gather({self.name(x)}, {pos}, {axis})"

    def e_trans(self, op):
        return f"tl.trans({self.name(op.operands[0])})"

    # Reductions and cumsum go through tl.reduce / tl.associative_scan, not tl.sum/tl.cumsum: those are
    # @triton.jit library functions, which the interpreter cannot call unless TRITON_INTERPRET was set
    # before Triton was imported. The combiners are Triton's own (tl.standard), which the interpreter
    # recognizes and runs as one numpy reduction; a combiner emitted here would send it to its
    # element-by-element Python fallback (seconds per 4x2048 tile). The compiled code is the same.
    def combiner(self, kind):
        return REDUCE[kind].triton_combiner

    def e_reduce(self, op):
        x = self.name(op.operands[0])
        k, axis, dt = op.attrs["kind"], op.attrs["axis"], op.results[0].dtype
        if k == "sum" and dt.name in _NARROW:  # accumulate narrow floats in fp32, as the reference does
            return f"tl.reduce({x}.to(tl.float32), {axis}, {self.combiner(k)}).to({tl_dtype(dt)})"
        return f"tl.reduce({x}, {axis}, {self.combiner(k)})"

    def e_cumsum(self, op):
        x = self.name(op.operands[0])
        axis, rev, dt = op.attrs["axis"], op.attrs["reverse"], op.results[0].dtype
        scan = "tl.associative_scan({}, " + f"{axis}, {self.combiner('sum')}, reverse={rev})"
        if dt.name in _NARROW:
            return scan.format(f"{x}.to(tl.float32)") + f".to({tl_dtype(dt)})"
        return scan.format(x)

    def e_scan(self, op):
        region = op.regions[0]
        helper = TritonEmitter.__new__(TritonEmitter)
        helper.__dict__.update(fn=self.fn, kernel_name=self.kernel_name, names={}, counter=0, helpers=self.helpers,
                               owners=self.owners, params={})
        params = [helper.name(a) for a in region.args]
        body = helper.block(region)
        outs = [helper.name(v) for v in region.terminator.operands]
        name = f"_tk_combine{len(self.helpers)}"
        self.helpers.append({"name": name, "params": params,
                             "lines": body + [f"return {outs[0]}" if len(outs) == 1 else f"return {', '.join(outs)}"]})
        vals = [self.name(v) for v in op.operands]
        arg = vals[0] if len(vals) == 1 else "(" + ", ".join(vals) + ",)"
        res = [self.name(r) for r in op.results]
        call = f"tl.associative_scan({arg}, {op.attrs['axis']}, {name}, reverse={op.attrs['reverse']})"
        return [f"{', '.join(res)}{',' if len(res) == 1 and len(vals) > 1 else ''} = {call}"]

    def e_mma(self, op):
        a, b, acc = op.operands
        (m, k), n = a.shape, b.shape[1]
        an, bn, cn = (self.name(v) for v in op.operands)
        if min(m, n, k) >= 16 and a.dtype.name in ("float16", "bfloat16", "float32", "int8", "float64"):
            precision = "tf32" if op.attrs["allow_tf32"] else "ieee"
            prec = f", input_precision='{precision}'" if a.dtype is D.float32 else ""
            return f"tl.dot({an}, {bn}, {cn}{prec})"
        # Shapes below the matrix-instruction minimum (16): a broadcast multiply and a sum over k.
        ct = tl_dtype(acc.dtype)
        # (tl.reduce with an emitted combiner, not tl.sum, which the interpreter cannot call: see e_reduce)
        return f"{cn} + tl.reduce({an}[:, :, None].to({ct}) * {bn}[None, :, :].to({ct}), 1, {self.combiner('sum')})"

    # -- memory --
    def address(self, op, tile_shape, kept=None):
        """(pointer expression lines, pointer name, mask name or None) for a load/store. ``kept``: the
        dimensions the pointer tile spans (default all); the others are unit blocks, addressed by a scalar."""
        tensor, offs, _, mask = offsets_and_mask(op)
        tname = self.tensor(tensor)
        rank = tensor.type.rank
        squeezed = kept is not None
        kept = list(range(rank)) if kept is None else kept
        lines, masks, scalar_masks = [], [], []
        idx_names, bound_dims = [], []
        implied = self.implied_bounds(tensor, offs, tile_shape, kept, mask)
        for d, (o, s) in enumerate(zip(offs, tile_shape)):
            idx = self.fresh(f"{tensor.name}_i{d}")
            expand = ("[" + ", ".join(":" if e == d else "None" for e in kept) + "]"
                      if len(kept) > 1 and d in kept else "")
            wide = ".to(tl.int64)" if tensor.type.large else ""
            if o.shape == () and d not in kept:  # a unit block: one scalar index, no tl.arange axis
                lines.append(f"{idx} = {self.name(o)}{wide}")
                cond = f"({idx} < {tname}_shape{d})"
                if not is_nonnegative(o, self.owners):
                    cond = f"({idx} >= 0) & {cond}"
                scalar_masks.append(cond)
            elif o.shape == ():
                lines.append(f"{idx} = ({self.name(o)}{wide} + tl.arange(0, {s})){expand}")
                conds = [] if is_nonnegative(o, self.owners) else [f"({idx} >= 0)"]
                if d not in implied:
                    bound_dims.append((d, len(masks)))
                    conds.append(f"({idx} < {{bound{d}}})")
                if conds:
                    masks.append(" & ".join(conds))
            else:
                lines.append(f"{idx} = {self.name(o)}{wide}{expand}")
            idx_names.append(idx)
        folded = None
        if scalar_masks and bound_dims:
            # The unit blocks' scalar conditions fold into one tile dimension's bound (``rows < (ok ? n : 0)``):
            # one scalar select, instead of a select per element of the tile mask.
            folded = bound_dims[-1][0]
            bound = self.fresh(f"{tensor.name}_bound")
            lines.append(f"{bound} = tl.where({' & '.join(scalar_masks)}, {tname}_shape{folded}, 0)")
        for d, j in bound_dims:
            masks[j] = masks[j].replace(f"{{bound{d}}}", bound if d == folded else f"{tname}_shape{d}")
        if folded is not None:
            scalar_masks = []
        if mask is not None:  # the op's own mask= has the tile's full shape
            squeezed_shape = [tile_shape[d] for d in kept]
            masks.append(f"tl.reshape({self.name(mask)}, {squeezed_shape})" if squeezed else self.name(mask))
        mname = None
        if masks:
            mname = self.fresh(f"{tensor.name}_mask")
            tile_mask = " & ".join(masks)
            # a scalar condition selects the tile mask (the interpreter rejects a tile & a scalar bool)
            lines.append(f"{mname} = " + (f"tl.where({' & '.join(scalar_masks)}, {tile_mask}, False)"
                                          if scalar_masks else tile_mask))
        return lines, idx_names, mname

    def implied_bounds(self, tensor, offs, tile_shape, kept, mask):
        """The tile dimensions whose ``< shape`` test the op's own mask already implies (``n0 + j < F`` on
        the rows of a ``(2F, K)`` tensor): the hand-written kernel's mask, not one more compare per element.
        One dimension keeps its test when unit blocks' scalar conditions must fold into a bound."""
        if mask is None:
            return set()
        conjuncts = mask_row_bounds(mask, len(tile_shape))
        tile_dims = [d for d, o in enumerate(offs) if o.shape == () and (kept is None or d in kept)]
        implied = {d for d in tile_dims if implies_row_bound(conjuncts, d, offs[d], tile_shape[d], tensor)}
        has_scalar = any(o.shape == () and kept is not None and d not in kept for d, o in enumerate(offs))
        if has_scalar and implied and implied == set(tile_dims):
            implied.discard(max(implied))
        return implied

    @staticmethod
    def pointer(t, idx):
        """The pointer tile of a load/store, as a hand-written kernel builds it: the offsets of every dimension
        but the last (unit blocks, rows: one per program or row) summed in the index type, added to the pointer
        once, then the last dimension's per-element offset. One 64-bit pointer add per term and element
        (``ptr + a + b + c``) costs sm_90 attention 3-5% more instructions; summing all terms first
        (``ptr + (a + b + c)``) makes a pipelined loop recompute the rows' part per stage (MoE +8%)."""
        terms = [f"{i} * {t}_stride{d}" for d, i in enumerate(idx)]
        if len(terms) > 2:
            return f"{t}_ptr + ({' + '.join(terms[:-1])}) + {terms[-1]}"
        return f"{t}_ptr + " + " + ".join(terms)

    def e_load(self, op):
        tensor, offs, other, _ = offsets_and_mask(op)
        shape = op.attrs["shape"]
        kept = None
        if not tensor.type.packed and len(shape) > 1 and self.feeds_mma(op.results[0]):
            # Unit blocks at scalar offsets (the (1, 1, BM, BD) tile of a 4-D tensor) of a dot operand are
            # addressed by a scalar and the tile loaded at its squeezed shape, then reshaped: a reshape of the
            # loaded tile breaks Triton's load -> shared memory -> wgmma chain (the operand goes through registers).
            kept = self.unit_dims_kept(offs, shape)
        lines, idx, mask = self.address(op, shape, kept)
        t = self.tensor(tensor)
        res = self.name(op.results[0])
        if tensor.type.packed:
            if self.packed_window_ok(op):
                return lines + self.packed_window_load(op, t, idx, mask, res)
            return lines + self.packed_load(op, t, idx, mask, res)
        ptr = self.pointer(t, idx)
        target = res if kept is None else f"{res}_squeezed"
        if mask is None:
            lines = lines + [f"{target} = tl.load({ptr})"]
        else:
            if other.owner is not None and other.owner.name == "const":
                o = literal(other.owner.attrs["value"], other.dtype)
            else:
                o = self.name(other)  # a runtime scalar
            lines = lines + [f"{target} = tl.load({ptr}, mask={mask}, other={o})"]
        if kept is not None:
            lines.append(f"{res} = tl.reshape({target}, {list(shape)})")
        return lines

    @staticmethod
    def packed_window_ok(op):
        """A packed tile whose columns start at one scalar offset, with no mask= (the words' rows must be
        in bounds without looking at elements), loads its covering words as one tile. Only on a Triton that
        compiles the window's tl.gather: 3.6's TritonGPUOptimizeThreadLocality pass fails on it (sm_90 and
        gfx942), 3.9 compiles it, 3.7 and 3.8 are untested; elsewhere each code loads its own word(s)."""
        _, offs, _, mask = offsets_and_mask(op)
        return _TRITON_COMPILES_WORD_WINDOW and mask is None and offs[-1].shape == ()

    def packed_window_load(self, op, t, idx, mask, res):
        """The covering words of every row as one contiguous (vectorisable) load, then each code gathered from
        those registers and shifted out: ``bits / 8`` bytes per weight instead of one or two words each."""
        tensor, offs, _, _ = offsets_and_mask(op)
        dt = op.results[0].dtype
        bits, shape = dt.bits, list(op.attrs["shape"])
        rank, last = len(shape), len(shape) - 1
        win = WordWindow(bits, shape[-1], known_multiple(offs[-1], self.owners))
        pfx = f"{res}_"
        along = lambda e: f"{e}[{', '.join(':' if d == last else 'None' for d in range(rank))}]" if rank > 1 else e
        c0 = self.name(offs[-1])
        # first word and first bit of the tile in its row, without forming c0 * bits (no overflow)
        lines = [f"{pfx}q = {c0} >> 5", f"{pfx}s = {c0} & 31", f"{pfx}first = {pfx}q * {bits} + (({pfx}s * {bits}) >> 5)"]
        o0 = "0" if win.word_aligned else f"(({pfx}s * {bits}) & 31)"
        wpr = f"{t}_wstride{last - 1}" if rank > 1 else f"(({t}_shape0 * {bits} + 31) >> 5)"
        row_ok = []
        for d in range(last):  # rows outside the tensor (block offsets; gathered rows are trusted)
            if offs[d].shape == ():
                row_ok.append(f"({idx[d]} < {t}_shape{d})")
                if not is_nonnegative(offs[d], self.owners):
                    row_ok.append(f"({idx[d]} >= 0)")
        row = " + ".join(f"{i}.to(tl.int64) * {t}_wstride{d}" for d, i in enumerate(idx[:-1]))
        # the needed words as power-of-two pieces, one vector load each (8 + 4 words, not 16 of which 12 are used)
        pieces = win.pieces(math.prod(shape[:-1]))
        for p, (first, size) in enumerate(pieces):
            w0 = f"{pfx}first + {first}" if first else f"{pfx}first"
            vec = win.piece_multiple(first)
            if vec > 1:  # proved by known_multiple: lets Triton vectorise the words' load
                w0 = f"tl.multiple_of({w0}, {vec})"
            lines.append(f"{pfx}j{p} = {along(f'tl.arange(0, {size})')}")
            lines.append(f"{pfx}w{p} = {w0} + {pfx}j{p}")
            wmask = [f"({pfx}w{p} < {wpr})"]
            if not is_nonnegative(offs[-1], self.owners):
                wmask.append(f"({pfx}w{p} >= 0)")
            if first + size > win.needed:
                wmask.append(f"({pfx}j{p} < {win.needed - first})")
            ptr = f"{t}_ptr + " + (f"{row} + " if row else "") + f"{pfx}w{p}"
            lines.append(f"{pfx}words{p} = tl.load({ptr}, mask={' & '.join(wmask + row_ok)}, other=0)")
        per_word = 32 // bits
        if (bits in (4, 8) and dt.kind == "int" and win.word_aligned and len(pieces) == 1
                and shape[-1] == win.padded * per_word and not self.feeds_mma(op.results[0])):
            # Signed 4- or 8-bit codes, window on a word boundary: each thread shifts its own words' codes out,
            # (rows..., words, codes per word) -> (rows..., cols), with no gather between threads (the W4 GEMV's
            # K loop: 855 instead of 1219 PTX instructions, 224 instead of 480 shuffles). Measured on Triton 3.9,
            # sm_90, and kept where it wins: not for 1 and 2 bits (16-32 codes per word spill on AMD), unsigned
            # codes (the zero-point formats: uint4's GEMV 230 registers instead of 101 for 6% fewer instructions)
            # or small floats (fp4/mxfp4: +60% registers, no fewer instructions), nor for a tile that feeds
            # tk.mma, where the gather's layout reaches the MMA operand for less (W4 GEMM's K loop: 328 instead of
            # 463 instructions, x loaded as 4 vectors instead of 32 scalars). The row's last word keeps only its
            # codes' bits, so codes past the row's end read as 0 whatever its padding holds, and no per-element
            # mask is needed.
            lines.append(f"{pfx}nb = (({t}_shape{last} & 31) * {bits}) & 31")
            lines.append(f"{pfx}tail = tl.where({pfx}nb == 0, -1, (1 << {pfx}nb) - 1)")
            lines.append(f"{pfx}words0 = tl.where({pfx}w0 == {wpr} - 1, {pfx}words0 & {pfx}tail, {pfx}words0)")
            shifts = f"(tl.arange(0, {per_word}) * {bits}).to(tl.uint32)[{', '.join(['None'] * rank + [':'])}]"
            lines.append(f"{pfx}code = (tl.expand_dims({pfx}words0.to(tl.uint32), {rank}) >> {shifts}) & {(1 << bits) - 1}")
            lines.append(f"{pfx}code = tl.reshape({pfx}code, {shape}).to(tl.int32)")
            return lines + self.decode_code(dt, pfx, res)
        lines.append(f"{pfx}rel = {along(f'({o0} + tl.arange(0, {shape[-1]}) * {bits})')}")
        full = lambda e: f"tl.broadcast_to({e}, {shape})" if rank > 1 else e

        # the pieces side by side again as one (rows..., padded) word tile (tl.join of two halves, moved
        # next to each other), so that each code is one gather whatever the number of pieces
        perm = tuple(range(last)) + (last + 1, last)

        def cat(a, b, width):
            lines.append(f"{pfx}cat = tl.permute(tl.join({a}, {b}), {perm})")
            lines.append(f"{pfx}cat = tl.reshape({pfx}cat, {shape[:-1] + [2 * width]})")
            return f"{pfx}cat"

        acc, width = f"{pfx}words{len(pieces) - 1}", pieces[-1][1]
        for p in range(len(pieces) - 2, -1, -1):
            while width < pieces[p][1]:   # pad the tail with zero words up to the next piece's width
                lines.append(f"{pfx}zero = tl.full({shape[:-1] + [width]}, 0, tl.int32)")
                acc = cat(acc, f"{pfx}zero", width)
                width *= 2
            acc = cat(f"{pfx}words{p}", acc, width)
            width *= 2
        words = acc

        def gather(name, word):
            return [f"{name} = tl.gather({words}, {full(word)}, {last}).to(tl.uint32)"]

        lines += gather(f"{pfx}lo", f"({pfx}rel >> 5)")
        lines.append(f"{pfx}sh = {full(f'({pfx}rel & 31)')}.to(tl.uint32)")
        m = (1 << bits) - 1
        if win.straddles:
            lines += gather(f"{pfx}hi", f"tl.minimum(({pfx}rel >> 5) + 1, {win.padded - 1})")
            # the next word's low bits, where the code crosses into it (a shift by 32 is avoided: sh > 0 there)
            lines.append(f"{pfx}code = ((({pfx}lo >> {pfx}sh) | tl.where({pfx}sh + {bits} > 32, {pfx}hi << "
                         f"((32 - {pfx}sh) & 31), 0)) & {m}).to(tl.int32)")
        else:
            lines.append(f"{pfx}code = (({pfx}lo >> {pfx}sh) & {m}).to(tl.int32)")
        if mask is not None:  # edge elements read as code 0, as the per-element path's other=0
            lines.append(f"{pfx}code = tl.where({mask}, {pfx}code, 0)")
        return lines + self.decode_code(dt, pfx, res)

    def feeds_mma(self, value, depth=8):
        """Whether ``value`` reaches a tk.mma operand through at most ``depth`` ops (casts, arithmetic,
        transposes; not through a reduction)."""
        users = self.__dict__.get("_users")
        if users is None:
            users = self._users = {}
            for o in walk(self.fn.body):
                for v in o.operands:
                    users.setdefault(v, []).append(o)
        frontier = [value]
        for _ in range(depth):
            nxt = []
            for v in frontier:
                for o in users.get(v, ()):
                    if o.name == "mma":
                        return True
                    if o.name not in ("reduce", "store", "atomic", "yield", "for", "if"):
                        nxt += o.results
            frontier = nxt
        return False

    def packed_load(self, op, t, idx, mask, res):
        dt = op.results[0].dtype
        bits = dt.bits
        row = " + ".join([f"{i}.to(tl.int64) * {t}_wstride{d}" for d, i in enumerate(idx[:-1])] or ["0"])
        pfx = f"{res}_"
        m = f", mask={mask}, other=0" if mask else ""
        hi_mask = f"{mask} & " if mask else ""
        lines = [
            f"{pfx}bit = {idx[-1]}.to(tl.int64) * {bits}",
            f"{pfx}word = {row} + ({pfx}bit >> 5)",
            f"{pfx}shift = ({pfx}bit & 31)",
            f"{pfx}lo = tl.load({t}_ptr + {pfx}word{m}).to(tl.uint32).to(tl.uint64)",
            # the next word is read only where the code straddles a word boundary
            f"{pfx}hi = tl.load({t}_ptr + {pfx}word + 1, mask={hi_mask}({pfx}shift + {bits} > 32), other=0)"
            f".to(tl.uint32).to(tl.uint64)",
            f"{pfx}code = ((({pfx}lo | ({pfx}hi << 32)) >> {pfx}shift.to(tl.uint64)) & {(1 << bits) - 1}).to(tl.int32)",
        ]
        return lines + self.decode_code(dt, pfx, res)

    def decode_code(self, dt, pfx, res):
        """Lines turning the int32 codes ``{pfx}code`` into the values ``res`` (dtypes.CodeRule, in Triton)."""
        lines = []
        rule = D.code_rule(dt)  # the decode rule, rendered in Triton
        if not rule.is_float:
            sb = rule.sign_bit
            lines.append(f"{res} = ({pfx}code ^ {sb}) - {sb}" if sb else f"{res} = {pfx}code")
            return lines
        lines += [
            f"{pfx}sign = tl.where(({pfx}code & {rule.sign_bit}) != 0, -1.0, 1.0)",
            f"{pfx}exp = ({pfx}code >> {rule.exp_shift}) & {rule.exp_mask}",
            f"{pfx}man = {pfx}code & {rule.man_mask}",
            f"{pfx}normal = ((({pfx}exp + {rule.f32_exp_offset}) << 23) | ({pfx}man << {rule.f32_man_shift}))"
            f".to(tl.float32, bitcast=True)",
            f"{pfx}sub = {pfx}man.to(tl.float32) * {rule.subnormal_scale!r}",
            f"{res} = {pfx}sign * tl.where({pfx}exp == 0, {pfx}sub, {pfx}normal)",
        ]
        if rule.special == "ieee":
            lines.append(f"{res} = tl.where({pfx}exp == {rule.exp_mask}, tl.where({pfx}man == 0, {pfx}sign * float('inf'), "
                         f"float('nan')), {res})")
        elif rule.special == "nan_at_max":
            lines.append(f"{res} = tl.where(({pfx}exp == {rule.exp_mask}) & ({pfx}man == {rule.man_mask}), float('nan'), {res})")
        return lines

    @staticmethod
    def unit_dims_kept(offs, shape):
        """The dimensions of a tile that are not unit blocks at scalar offsets, or None when there is nothing
        to squeeze (every dimension spans the tile, or no kept one has a tile mask for scalar conditions)."""
        kept = [d for d, (o, n) in enumerate(zip(offs, shape)) if not (n == 1 and o.shape == ())]
        if len(kept) == len(shape) or not any(offs[d].shape == () for d in kept):
            return None
        return kept

    def store(self, op):
        tensor, offs, value, _ = offsets_and_mask(op)
        # unit blocks at scalar offsets (O's (1, 1, BM, BD) block) are addressed by a scalar, as in e_load
        kept = self.unit_dims_kept(offs, value.shape) if len(value.shape) > 1 else None
        lines, idx, mask = self.address(op, value.shape, kept)
        t = self.tensor(tensor)
        ptr = self.pointer(t, idx)
        fn = "tl.store" if op.name == "store" else ATOMIC_RMW[op.attrs["kind"]].triton
        m = f", mask={mask}" if mask else ""
        val = self.name(value)
        if kept is not None:
            val = f"tl.reshape({val}, {[value.shape[d] for d in kept]})"
        return lines + [f"{fn}({ptr}, {val}{m})"]


def emit(fn, kernel_name) -> str:
    return TritonEmitter(fn, kernel_name).emit()
