"""The reference executor: runs Tile IR with numpy, one program instance at a time.

It defines tilekit's semantics. Narrow floats are held in float32 and rounded to their format after
every op, where a GPU would round. Every memory access is bounds-checked: an element outside its tensor
that the automatic edge masking does not cover raises ``OutOfBoundsError`` naming the op and the line.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import torch

from . import dtypes as D
from . import packing
from .errors import OutOfBoundsError
from .ir import offsets_and_mask
from .optable import ATOMIC_RMW, BINARY, COMPARE, REDUCE, UNARY


# ---- elementwise semantics (shared with constant folding) ---------------------------------------

def wrap_int(x, dt):
    """Wrap integer results to ``dt``'s width, as two's-complement hardware does."""
    if not dt.is_int or dt.bits >= 32:
        return x.astype(D.numpy_compute_dtype(dt)) if isinstance(x, np.ndarray) else x
    x = np.asarray(x).astype(np.int64)
    m = (1 << dt.bits) - 1
    x = x & m
    if dt.kind == "int":
        x = np.where(x >= (1 << (dt.bits - 1)), x - (1 << dt.bits), x)
    return x.astype(np.int32)


def finish(x, dt):
    """Bring a computed array to ``dt``'s storage: round floats, wrap ints."""
    if dt.is_float:
        return D.round_to_format(x, dt)
    if dt.is_bool:
        return np.asarray(x, dtype=np.bool_)
    return wrap_int(np.asarray(x), dt)


def _trunc_div(x, y):
    y_safe = np.where(y == 0, 1, y)
    q = np.abs(x) // np.abs(y_safe)
    return np.where((x < 0) ^ (y_safe < 0), -q, q)


def eval_binary(op, x, y, dt):
    """``x op y`` for operands of dtype ``dt`` (a comparison gives bool). Regular kinds come from the op
    table; integer division, modulo and shifts are C's, written out here."""
    with np.errstate(all="ignore"):
        if op in COMPARE:
            return COMPARE[op][1](x, y)
        entry = BINARY[op]
        if dt.is_float:
            return finish(entry.float_np(x, y), dt)
        if dt.is_bool:
            return entry.bool_np(x, y)
        x64, y64 = np.asarray(x).astype(np.int64), np.asarray(y).astype(np.int64)
        if op == "floordiv":
            r = _trunc_div(x64, y64)  # C semantics: truncate toward zero, as GPUs do
        elif op == "mod":
            r = x64 - _trunc_div(x64, y64) * y64
        elif op == "shl":
            r = x64 << np.clip(y64, 0, 63)
        elif op == "shr":
            r = x64 >> np.clip(y64, 0, 63)
            if dt.kind == "uint":
                r = (np.asarray(x).astype(np.uint64) >> np.clip(y64, 0, 63).astype(np.uint64)).astype(np.int64)
        else:
            r = entry.int_np(x64, y64)
        return finish(r, dt)


def eval_unary(op, x, dt):
    with np.errstate(all="ignore"):
        if op == "not":
            return np.logical_not(x)
        if op == "neg":
            return finish(-np.asarray(x).astype(np.int64) if dt.is_int else -x, dt)
        if op == "abs":
            return finish(np.abs(np.asarray(x).astype(np.int64)) if dt.is_int else np.abs(x), dt)
        if op == "invert":
            if dt.is_bool:
                return np.logical_not(x)
            return finish(~np.asarray(x).astype(np.int64), dt)
        return finish(UNARY[op].numpy(x), dt)


def eval_cast(x, src, dst):
    with np.errstate(all="ignore"):
        if dst.is_bool:
            return np.asarray(x) != 0
        if dst.is_float:
            return finish(np.asarray(x, dtype=np.float64 if dst.bits == 64 else np.float32), dst)
        x = np.asarray(x)
        if src.is_float:
            x = np.nan_to_num(np.trunc(x), nan=0.0, posinf=0.0, neginf=0.0)  # C truncation toward zero
            lo, hi = D.int_range(dst)
            # saturate in float64: in float32, hi (2**31 - 1) rounds up to 2**31 and would wrap to lo
            xf = np.clip(np.asarray(x, dtype=np.float64), lo, hi)
            top = xf >= float(hi)
            x = np.where(top, hi, np.where(top, 0.0, xf).astype(np.int64))
            return finish(np.asarray(x, dtype=np.int64), dst)
        return finish(x.astype(np.int64), dst)


# ---- tensors --------------------------------------------------------------------------------------

class TensorView:
    """A kernel argument as numpy sees it: element reads/writes at integer coordinates."""

    def __init__(self, name, arg):
        self.name = name
        if isinstance(arg, packing.PackedTensor):
            self.dtype = arg.dtype
            self.shape = arg.shape
            self.values = packing.decode(packing.codes(arg), arg.dtype).astype(
                np.float32 if arg.dtype.is_float else np.int32)
            self.raw = None
            self.bytes_per_element = arg.dtype.bits / 8  # the bits a code takes in its packed row
            return
        self.bytes_per_element = arg.element_size()
        self.dtype = D.from_torch(arg.dtype)
        self.shape = tuple(arg.shape)
        t = arg.detach()
        self.raw = t.view(torch.int16).numpy() if arg.dtype == torch.bfloat16 else t.numpy()
        self.values = None

    def read(self, idx):
        if self.values is not None:
            return self.values[idx]
        r = self.raw[idx]
        if self.dtype is D.bfloat16:
            return (r.astype(np.uint16).astype(np.uint32) << 16).view(np.float32)
        return r.astype(D.numpy_compute_dtype(self.dtype))

    def encode(self, v):
        if self.dtype is D.bfloat16:
            bits = D.round_to_bf16(v).view(np.uint32) >> 16
            return bits.astype(np.uint16).view(np.int16)
        return v.astype(self.raw.dtype)

    def write(self, idx, v):
        self.raw[idx] = self.encode(v)

    def rmw(self, combine, idx, v):
        """``T[idx] = combine(T[idx], v)``, one element at a time in index order, so duplicate targets
        accumulate (and round) as atomics do."""
        if self.dtype.is_float:
            for k in range(len(v)):
                key = tuple(i[k] for i in idx)
                old = self.read(key)
                self.raw[key] = self.encode(np.asarray(finish(np.asarray(combine(old, v[k])), self.dtype)))
        else:
            combine.at(self.raw, idx, v.astype(self.raw.dtype))


# ---- launch statistics ----------------------------------------------------------------------------

@dataclass
class TensorTraffic:
    """Elements (and their bytes) one launch read from and wrote to one tensor parameter. Masked-off
    elements (edges, ``mask=``) are not counted; an atomic read-modify-write counts as a load and a store.
    A packed tensor's bytes are ``bits / 8`` per element."""
    elements_loaded: int = 0
    bytes_loaded: float = 0
    elements_stored: int = 0
    bytes_stored: float = 0


@dataclass
class LaunchStats:
    """What one reference launch did: ``programs`` run, ``loop_iterations`` (every ``tk.range`` iteration of
    every program, nested loops included) and the traffic per tensor parameter, by name."""
    programs: int = 0
    loop_iterations: int = 0
    tensors: dict = field(default_factory=dict)

    @property
    def bytes_loaded(self):
        return sum(t.bytes_loaded for t in self.tensors.values())

    @property
    def bytes_stored(self):
        return sum(t.bytes_stored for t in self.tensors.values())


# ---- the executor ---------------------------------------------------------------------------------

class _Program:
    def __init__(self, fn, views, scalars, pid, grid, stats):
        self.fn = fn
        self.stats = stats
        self.views = views
        self.pid = pid
        self.grid = grid
        self.env = {}
        for p in fn.params:
            if p.kind == "scalar":
                self.env[p.value] = np.asarray(scalars[p.name], dtype=D.numpy_compute_dtype(p.value.dtype))

    def run(self):
        self.block(self.fn.body)

    def block(self, block):
        env = self.env
        for op in block.ops:
            if op.name == "yield":
                return [env[v] for v in op.operands]
            handler = _HANDLERS[op.name]
            out = handler(self, op, [env[v] if v in env else None for v in op.operands])
            if op.results:
                if len(op.results) == 1:
                    env[op.results[0]] = out
                else:
                    for r, o in zip(op.results, out):
                        env[r] = o
        return []

    def count(self, view, n, stored=False):
        t = self.stats.tensors[view.name]
        n = int(n)
        if stored:
            t.elements_stored += n
            t.bytes_stored += n * view.bytes_per_element
        else:
            t.elements_loaded += n
            t.bytes_loaded += n * view.bytes_per_element

    def oob(self, op, message):
        loc = f"{op.loc}: " if op.loc else ""
        line = f"\n    {op.loc.line.strip()}" if op.loc and op.loc.line else ""
        return OutOfBoundsError(f"{loc}{message} (program id {self.pid}){line}")


def _memory_index(prog, op, vals, tile_shape):
    tensor_v, offs_v, _, mask_v = offsets_and_mask(op)
    view = prog.views[tensor_v]
    rank = len(view.shape)
    offs = vals[1:1 + rank]
    coords, auto_masks = [], []
    for d, (o, s) in enumerate(zip(offs, tile_shape)):
        shape = [1] * rank
        shape[d] = s
        if np.ndim(o) == 0:
            c = (int(o) + np.arange(s, dtype=np.int64)).reshape(shape)
            auto_masks.append((c >= 0) & (c < view.shape[d]))
        else:
            c = np.asarray(o, dtype=np.int64).reshape(shape)
        coords.append(c)
    mask = np.ones(tile_shape, dtype=bool)
    for m in auto_masks:
        mask = mask & m
    if mask_v is not None:
        mask = mask & np.broadcast_to(prog.env[mask_v], tile_shape)
    full = [np.broadcast_to(c, tile_shape) for c in coords]
    for d, c in enumerate(full):
        bad = mask & ((c < 0) | (c >= view.shape[d]))
        if bad.any():
            where = tuple(int(x[0]) for x in np.nonzero(bad))
            coord = tuple(int(cc[where]) for cc in full)
            what = {"load": "tk.load reads", "store": "tk.store writes"}.get(
                op.name, f"tk.atomic_{op.attrs.get('kind')} writes")
            raise prog.oob(op, f"{what} {tensor_v.name}{list(coord)} outside its shape {list(view.shape)}: "
                               f"dimension {d} is indexed by a tile, which is not masked automatically; "
                               f"pass mask= to cover out-of-range indices")
    idx = tuple(c[mask] for c in full)
    return view, mask, idx


def _load(prog, op, vals):
    shape = op.attrs["shape"]
    view, mask, idx = _memory_index(prog, op, vals, shape)
    other = vals[1 + len(shape)]
    out = np.empty(shape, dtype=D.numpy_compute_dtype(op.results[0].dtype))
    out[...] = other
    out[mask] = view.read(idx)
    prog.count(view, idx[0].size if idx else 1)
    return out


def _store(prog, op, vals):
    value = vals[1 + op.operands[0].type.rank]
    view, mask, idx = _memory_index(prog, op, vals, value.shape)
    data = np.broadcast_to(value, mask.shape)[mask]
    prog.count(view, data.size, stored=True)
    if op.name != "store":
        prog.count(view, data.size)
    if op.name == "store":
        view.write(idx, data)
    else:
        view.rmw(ATOMIC_RMW[op.attrs["kind"]].numpy, idx, data)


def _scan(prog, op, vals):
    axis, n = op.attrs["axis"], len(vals)
    region = op.regions[0]
    moved = [np.moveaxis(np.asarray(v), axis, 0) for v in vals]
    length = moved[0].shape[0]
    order = range(length - 1, -1, -1) if op.attrs["reverse"] else range(length)
    outs = [np.empty_like(m) for m in moved]
    acc = None
    for i in order:
        cur = [m[i] for m in moved]
        if acc is None:
            acc = cur
        else:
            # As Triton: a reverse scan is flip, scan, flip, so the left operand is always what has been
            # accumulated so far (in reverse, the higher indices) and the right one the current element.
            for a, v in zip(region.args, acc + cur):
                prog.env[a] = v
            acc = prog.block(region)
        for o, a in zip(outs, acc):
            o[i] = a
    return [np.moveaxis(o, 0, axis) for o in outs] if n > 1 else np.moveaxis(outs[0], 0, axis)


def _mma(prog, op, vals):
    a, b, acc = vals
    dt = op.results[0].dtype
    if dt.is_int:
        return wrap_int(a.astype(np.int64) @ b.astype(np.int64) + acc, dt)
    ct = np.float64 if dt.bits == 64 else np.float32
    return (a.astype(ct) @ b.astype(ct) + acc).astype(ct)


def _for(prog, op, vals):
    start, stop, step = (int(v) for v in vals[:3])
    carried = list(vals[3:])
    body = op.regions[0]
    for i in range(start, stop, step):
        prog.stats.loop_iterations += 1
        prog.env[body.args[0]] = np.asarray(i, dtype=np.int32)
        for a, v in zip(body.args[1:], carried):
            prog.env[a] = v
        carried = prog.block(body)
    return carried if len(op.results) != 1 else carried[0]


def _if(prog, op, vals):
    out = prog.block(op.regions[0] if bool(vals[0]) else op.regions[1])
    return out if len(op.results) != 1 else out[0]


def _reduce(prog, op, vals):
    x, kind, axis = vals[0], op.attrs["kind"], op.attrs["axis"]
    dt = op.results[0].dtype
    if kind == "sum":
        acc = np.float64 if dt.bits == 64 else np.float32 if dt.is_float else np.int64
        return finish(np.sum(x.astype(acc), axis=axis), dt)
    return REDUCE[kind].numpy(x, axis=axis)


def _cumsum(prog, op, vals):
    x, axis, dt = vals[0], op.attrs["axis"], op.results[0].dtype
    acc = np.float64 if dt.bits == 64 else np.float32 if dt.is_float else np.int64
    if op.attrs["reverse"]:
        return finish(np.flip(np.cumsum(np.flip(x.astype(acc), axis), axis=axis), axis), dt)
    return finish(np.cumsum(x.astype(acc), axis=axis), dt)


def _const(value, dt):
    """A constant holds a value of its dtype: a literal adopting a narrow float type (``x * 0.1`` with x fp16)
    is rounded to it, as every backend's typed literal is."""
    with np.errstate(over="ignore"):
        v = np.asarray(value, dtype=D.numpy_compute_dtype(dt))
        return finish(v, dt) if dt.is_float and dt.bits < 32 else v


_HANDLERS = {
    "const": lambda p, op, v: _const(op.attrs["value"], op.attrs["dtype"]),
    "program_id": lambda p, op, v: np.asarray(p.pid[op.attrs["axis"]], dtype=np.int32),
    "num_programs": lambda p, op, v: np.asarray(p.grid[op.attrs["axis"]], dtype=np.int32),
    "dim": lambda p, op, v: np.asarray(p.views[op.operands[0]].shape[op.attrs["axis"]], dtype=np.int32),
    "arange": lambda p, op, v: np.arange(op.attrs["n"], dtype=np.int32),
    "full": lambda p, op, v: np.full(op.attrs["shape"], v[0], dtype=D.numpy_compute_dtype(op.attrs["dtype"])),
    "load": _load,
    "store": _store,
    "atomic_rmw": _store,
    "unary": lambda p, op, v: eval_unary(op.attrs["op"], v[0], op.results[0].dtype),
    "binary": lambda p, op, v: eval_binary(op.attrs["op"], v[0], v[1], op.operands[0].dtype),
    "cmp": lambda p, op, v: eval_binary(op.attrs["op"], v[0], v[1], op.operands[0].dtype),
    "where": lambda p, op, v: np.where(v[0], v[1], v[2]),
    "cast": lambda p, op, v: eval_cast(v[0], op.operands[0].dtype, op.attrs["dtype"]),
    "broadcast": lambda p, op, v: np.broadcast_to(v[0], op.attrs["shape"]).copy(),
    "expand_dims": lambda p, op, v: np.expand_dims(v[0], op.attrs["axis"]),
    "reshape": lambda p, op, v: np.reshape(v[0], op.attrs["shape"]),
    "slice": lambda p, op, v: np.take(v[0], np.arange(op.attrs["start"], op.attrs["start"] + op.attrs["size"]),
                                      axis=op.attrs["axis"]),
    "trans": lambda p, op, v: np.ascontiguousarray(np.transpose(v[0])),
    "reduce": _reduce,
    "cumsum": _cumsum,
    "scan": _scan,
    "mma": _mma,
    "for": _for,
    "if": _if,
}


def run(fn, args: dict, grid) -> LaunchStats:
    """Execute ``fn`` over ``grid`` with ``args`` (param name -> torch tensor / PackedTensor / scalar); returns
    what the launch did (:class:`LaunchStats`)."""
    views = {}
    scalars = {}
    for p in fn.params:
        if p.kind == "tensor":
            views[p.value] = TensorView(p.name, args[p.name])
        else:
            scalars[p.name] = args[p.name]
    grid = tuple(grid) + (1,) * (3 - len(grid))
    stats = LaunchStats(tensors={v.name: TensorTraffic() for v in views.values()})
    for pid in itertools.product(*(range(g) for g in grid)):
        stats.programs += 1
        _Program(fn, views, scalars, pid, grid, stats).run()
    return stats
