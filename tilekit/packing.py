"""Packed storage for sub-byte integers and small floats.

Layout: each row (all dims but the last) is a dense little-endian bit stream of ``bits``-wide codes,
element ``c`` of a row at bit ``c * bits``. A row takes ``ceil(n * bits / 32)`` int32 words, so rows
start on word boundaries and no bits are wasted within a row. Kernels read a packed tensor with plain
``tk.load`` at logical element coordinates; the backend fetches the (at most two) words an element
spans and shifts it out.
"""
from __future__ import annotations

import numpy as np
import torch

from . import dtypes as D


class PackedTensor:
    """A logical tensor of a packed dtype, held in int32 words. Pass it to kernels like a tensor."""

    __slots__ = ("words", "dtype", "shape")

    def __init__(self, words: torch.Tensor, dtype: D.DType, shape):
        dtype = D.to_dtype(dtype)
        shape = tuple(int(s) for s in shape)
        if words.dtype != torch.int32:
            raise TypeError(f"packed words must be torch.int32, got {words.dtype}")
        if not dtype.is_packed and dtype.bits > 8:
            raise TypeError(f"{dtype} is not a packed dtype")
        if len(shape) == 0:
            raise ValueError("a packed tensor needs at least one dimension")
        want = tuple(shape[:-1]) + (words_per_row(shape[-1], dtype.bits),)
        if tuple(words.shape) != want:
            raise ValueError(f"words of shape {tuple(words.shape)} do not hold a {dtype} tensor of shape "
                             f"{shape}: expected words of shape {want}")
        if not words.is_contiguous():
            raise ValueError("packed words must be contiguous")
        self.words, self.dtype, self.shape = words, dtype, shape

    @classmethod
    def empty(cls, shape, dtype, device=None) -> "PackedTensor":
        """An uninitialized packed tensor of logical ``shape``; with ``device="meta"`` it has no storage and
        serves as an example argument for ``kernel.compile(target, ...)``."""
        dtype = D.to_dtype(dtype)
        shape = tuple(int(s) for s in shape)
        if len(shape) == 0:
            raise ValueError("a packed tensor needs at least one dimension")
        words = torch.empty(shape[:-1] + (words_per_row(shape[-1], dtype.bits),), dtype=torch.int32, device=device)
        return cls(words, dtype, shape)

    def to(self, device) -> "PackedTensor":
        """The same codes on ``device`` (``"meta"`` keeps only the shape, for ahead-of-time compiling)."""
        return PackedTensor(self.words.to(device), self.dtype, self.shape)

    device = property(lambda self: self.words.device)
    ndim = property(lambda self: len(self.shape))

    def row_stride_words(self):
        return self.words.shape[-1]

    def __repr__(self):
        return f"PackedTensor({self.dtype}, shape={self.shape}, device={self.device})"


def words_per_row(n: int, bits: int) -> int:
    return (n * bits + 31) // 32


# threads of a default launch (4 warps): the width under which a vector load has threads loading the same words
LANES = 128


class WordWindow:
    """The contiguous words of one row that a tile of ``cols`` consecutive codes covers, as the backends
    load them: ``needed`` words per row, as one vectorisable load of ``padded`` (a power of two) words or as
    ``pieces`` (power-of-two runs, one load each), then the codes are shifted out in registers.

    ``start_multiple`` is a power of two known to divide the tile's first column (``analysis.known_multiple``):
    when ``start * bits`` is then a multiple of 32 the window starts exactly on the tile's first bit."""

    def __init__(self, bits: int, cols: int, start_multiple: int):
        self.bits, self.cols = bits, cols
        self.word_aligned = (start_multiple * bits) % 32 == 0
        # a power of two dividing the window's first word index (vector loads need that alignment), up to 16
        words = start_multiple * bits // 32 if self.word_aligned else 0
        self.word_multiple = min(16, words & -words) if words else 1
        span = cols * bits + (0 if self.word_aligned else 31)  # the first code may start up to 31 bits in
        self.needed = -(-span // 32)
        self.padded = 1 << (self.needed - 1).bit_length()
        # a code never straddles two words when bits divides 32 and the window starts on a code boundary
        self.straddles = not (32 % bits == 0 and self.word_aligned)

    def pieces(self, rows: int, lanes: int = LANES):
        """How to load ``rows`` rows of the window: (first word, word count) runs, each a power of two and its
        own vector load, the last one masked to ``needed``. ``needed`` as its binary digits (12 words as
        8 + 4) issues only the words it needs, but a run of fewer than ``lanes`` words over all rows is
        loaded by several threads at once, so the cheapest split (in words issued, ``lanes`` at least per
        run) wins, fewer runs on a tie: ``[(0, padded)]`` is the single load."""
        digits = [1 << b for b in reversed(range(self.needed.bit_length())) if self.needed >> b & 1]
        best, best_cost = None, None
        for keep in range(len(digits)):
            head = digits[:keep]
            rest = self.needed - sum(head)
            sizes = head + [1 << (rest - 1).bit_length()]
            cost = sum(max(rows * s, lanes) for s in sizes)
            if best_cost is None or cost < best_cost:
                best, best_cost = sizes, cost
        firsts = [sum(best[:i]) for i in range(len(best))]
        return list(zip(firsts, best))

    def piece_multiple(self, first):
        """A power of two dividing the first word index of the run starting ``first`` words in."""
        return min(self.word_multiple, first & -first) if first else self.word_multiple


def _codes_from_values(values: torch.Tensor, dtype: D.DType) -> np.ndarray:
    v = values.detach().cpu()
    if dtype.is_float:
        return D.encode_small_float(v.to(torch.float64).numpy(), dtype)
    if v.is_floating_point() and not torch.equal(v, v.round()):
        raise ValueError(f"values for {dtype} must be integers")
    arr = v.to(torch.int64).numpy()
    lo, hi = D.int_range(dtype)
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise ValueError(f"values out of range for {dtype} [{lo}, {hi}]: found {arr.min()}..{arr.max()}")
    return arr & ((1 << dtype.bits) - 1)


def pack(values: torch.Tensor, dtype) -> PackedTensor:
    """Pack ``values`` into ``dtype`` codes. Integers must be in range; floats round to nearest even."""
    dtype = D.to_dtype(dtype)
    if dtype.bits > 8 or dtype.is_bool:
        raise TypeError(f"tk.pack packs sub-byte ints and small floats (<= 8 bits), not {dtype}")
    if values.dim() == 0:
        raise ValueError("tk.pack needs at least a 1-D tensor")
    codes = _codes_from_values(values, dtype).astype(np.uint64)
    *lead, n = codes.shape
    bits = dtype.bits
    nwords = words_per_row(n, bits)
    rows = codes.reshape(int(np.prod(lead, dtype=np.int64)), n)  # (not -1: a row may be empty)
    out = np.zeros((rows.shape[0], nwords + 1), dtype=np.uint64)
    pos = np.arange(n, dtype=np.uint64) * np.uint64(bits)
    word = (pos >> np.uint64(5)).astype(np.int64)
    shift = pos & np.uint64(31)
    for r in range(rows.shape[0]):  # per row: np.add.at handles several codes landing in one word
        np.add.at(out[r], word, (rows[r] << shift) & np.uint64(0xFFFFFFFF))
        np.add.at(out[r], word + 1, rows[r] >> (np.uint64(32) - shift))
    words = out[:, :nwords].astype(np.uint32).view(np.int32).reshape(*lead, nwords)
    return PackedTensor(torch.from_numpy(words.copy()).to(values.device), dtype, values.shape)


def codes(p: PackedTensor) -> np.ndarray:
    """The raw codes of a packed tensor, as int64, in its logical shape."""
    bits = p.dtype.bits
    n = p.shape[-1]
    nrows = int(np.prod(p.shape[:-1], dtype=np.int64))  # (not -1: a row may be empty)
    w = p.words.detach().cpu().numpy().view(np.uint32).reshape(nrows, p.words.shape[-1]).astype(np.uint64)
    w = np.concatenate([w, np.zeros((w.shape[0], 1), np.uint64)], axis=1)
    pos = np.arange(n, dtype=np.uint64) * np.uint64(bits)
    word = (pos >> np.uint64(5)).astype(np.int64)
    shift = pos & np.uint64(31)
    both = w[:, word] | (w[:, word + 1] << np.uint64(32))
    c = ((both >> shift) & np.uint64((1 << bits) - 1)).astype(np.int64)
    return c.reshape(p.shape)


def decode(c: np.ndarray, dtype: D.DType) -> np.ndarray:
    """Codes to values: sign-extended ints, or small-float values as float64 (``dtypes.CodeRule``)."""
    return D.code_rule(dtype).decode(c)


def unpack(p: PackedTensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Unpack to a torch tensor of values (int64 for ints, float32 for small floats by default)."""
    vals = decode(codes(p), p.dtype)
    t = torch.from_numpy(np.ascontiguousarray(vals))
    t = t.to(out_dtype or (torch.float32 if p.dtype.is_float else torch.int64))
    return t.to(p.device)
