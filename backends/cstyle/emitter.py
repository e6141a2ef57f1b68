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

The emitter is one class composed of a mixin per concern, each in its own module:

* ``layout``      -- the register layout, coordinates, the per-thread element loop;
* ``values``      -- how values are held, their expression at an element, cross-thread movement;
* ``expressions`` -- elementwise ops (spelled from ``tilekit/optable.py``) and layout-only ops;
* ``memory``      -- addresses, masks, element/vector/packed loads, stores and atomics;
* ``reductions``  -- reductions and scans;
* ``mma``         -- matrix multiply (the dialect's instruction, or the FMA loop);
* ``control``     -- ``for`` / ``if`` / yields;
* this module     -- names, helpers, op dispatch, leaves and the kernel's rendering.
"""
from __future__ import annotations

from ... import __version__
from ...analysis import loop_owners
from ...ir import walk
from ...optable import ELEMENTWISE_OPS, Trait, has
from .. import naming
from ..templating import render
from .types import literal, rtype, stype
from .control import ControlMixin
from .expressions import ExpressionsMixin
from .layout import LayoutMixin
from .memory import MemoryMixin
from .mma import MmaMixin
from .reductions import ReductionsMixin
from .values import EmitError, Val, ValuesMixin


class CEmitter(LayoutMixin, ValuesMixin, ExpressionsMixin, MemoryMixin, ReductionsMixin, MmaMixin, ControlMixin):
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
        self.loop_depth = 0       # tk.range loops around the op being emitted
        self.cost_memo = {}
        self.features = set()      # dialect features the kernel needs (e.g. "int64_atomics", "fp64")
        self.matrix_ops = []       # how each mma lowered: "wmma", "mfma", "fma"
        self.written = {op.operands[0] for op in walk(fn.body) if has(op.name, Trait.WRITES_MEMORY)}

    @staticmethod
    def pick_vec(fn, dialect):
        """Elements per chunk: 16 bytes of the narrowest (non-packed) tensor the kernel touches, 4 to 8."""
        sizes = [dialect.sizeof(stype(p.value.type.dtype)) for p in fn.params
                 if p.kind == "tensor" and not p.value.type.packed and not p.value.type.dtype.is_bool]
        if not sizes:
            return dialect.default_vec
        return max(dialect.default_vec, min(8, 16 // min(sizes)))

    def fresh(self, hint=""):
        """A new local (``v<counter>_<hint>``: see backends/naming.py, so it cannot meet a user name)."""
        n = naming.local(self.counter, hint)
        self.counter += 1
        return n

    @staticmethod
    def tensor_name(v):
        """The prefix of a tensor parameter's C parameters (``<prefix>_ptr``, ``_shape<d>``, ``_stride<d>``)."""
        return naming.tensor_base(v.name)

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

    def emit(self):
        params = []
        for p in self.fn.params:
            if p.kind == "tensor":
                t = self.tensor_name(p.value)
                params += self.d.tensor_params(t, p.value.type, p.value in self.written)
                self.vals[p.value] = Val("tensor", t)
            else:
                cname = naming.scalar_param(p.name)
                params.append(self.d.scalar_param(cname, naming.bool_param(p.name), p.value.dtype))
                self.vals[p.value] = Val("scalar", cname)
        body = []
        for p in self.fn.params:
            if p.kind == "scalar" and p.value.dtype.is_bool:
                body.append(f"const bool {naming.scalar_param(p.name)} = {naming.bool_param(p.name)} != 0;")
        body += self.block(self.fn.body)
        origin = str(self.fn.loc) if self.fn.loc else "?"
        return render(self.d.template,
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
            if n in ELEMENTWISE_OPS:
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

    def op_const(self, op):
        return self.set_scalar(op, literal(op.attrs["value"], op.attrs["dtype"]))

    def op_program_id(self, op):
        return self.set_scalar(op, self.d.program_id(op.attrs["axis"]))

    def op_num_programs(self, op):
        return self.set_scalar(op, self.d.num_programs(op.attrs["axis"]))

    def op_dim(self, op):
        return self.set_scalar(op, f"{self.tensor_name(op.operands[0])}_shape{op.attrs['axis']}")

    def op_arange(self, op):
        return self.set_virtual(op)

    def op_full(self, op):
        return self.set_virtual(op)


def emit(fn, kernel_name, dialect, num_warps=None, vec=None):
    """(source, emitter) for ``fn`` in ``dialect``; the emitter keeps the launch facts (threads, smem)."""
    e = CEmitter(fn, kernel_name, dialect, num_warps, vec)
    return e.emit(), e
