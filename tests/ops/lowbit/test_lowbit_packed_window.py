"""The Triton lowering's packed-tile window (the GEMV/GEMM weight stream) loads only the words it needs: an odd
width's words per row are split into power-of-two pieces, one vector load each (int3 x 128 codes: 8 + 4 words, not
16), then joined again for the decode. Checked on the compiled sm_90 PTX (bytes issued per weight = bits / 8 for
every width 1-7) and by value on every executing backend, with tiles big enough to take the split."""
import functools
import re

import pytest
import torch

import tilekit as tk
from tilekit import dtypes as D
from tilekit.backends import get_backend
from tilekit.packing import WordWindow

EXEC = [b for b in ("reference", "triton", "opencl") if get_backend(b).available()[0]]
_LD = re.compile(r"\bld\.global(?:\.[a-z]+)*?(?:\.v(\d))?\.(?:[bsuf])(\d+)\b")


@tk.kernel
def aligned_rows(W, Out, BN: tk.constexpr = 32, BK: tk.constexpr = 128):
    n0, k0 = tk.program_id(0) * BN, tk.program_id(1) * BK
    tk.store(Out, (n0, k0), tk.load(W, (n0, k0), (BN, BK)).to(tk.float16))


@tk.kernel
def window_at(W, Out, r, cb, BN: tk.constexpr, BK: tk.constexpr, ALIGN: tk.constexpr):
    """The tile at (r, cb * ALIGN): ALIGN tells the lowering what the first column is a multiple of."""
    tk.store(Out, (0, 0), tk.load(W, (r, cb * ALIGN), (BN, BK)).to(tk.float32))


@functools.lru_cache(maxsize=None)
def _ptx(dtype_name):
    return aligned_rows.compile("sm_90", f"{dtype_name}[4096,4096]", "fp16[4096,4096]").asm["ptx"]


def test_window_pieces():
    assert WordWindow(3, 128, 128).pieces(32) == [(0, 8), (8, 4)]        # 12 words: 8 + 4
    assert WordWindow(7, 128, 128).pieces(32) == [(0, 16), (16, 8), (24, 4)]
    assert WordWindow(4, 128, 128).pieces(32) == [(0, 16)]               # a power of two: one load
    # a piece of fewer words (over all rows) than 4 warps' threads is loaded by several threads: not split
    assert WordWindow(3, 64, 64).pieces(32) == [(0, 8)]
    assert WordWindow(7, 128, 1).pieces(64) == [(0, 16), (16, 8), (24, 4), (28, 1)]  # 29 words, unaligned


@pytest.mark.parametrize("bits", range(1, 8))
def test_odd_width_window_issues_only_the_words_it_needs(bits):
    """32 rows x 128 codes over 4 warps, straight-line code loading only W: bytes issued per weight is bits / 8
    exactly (before the split, 3, 5, 6 and 7 bits issued 0.5, 1, 1 and 1)."""
    pytest.importorskip("triton")
    loads = [(int(m.group(1) or 1), int(m.group(2))) for m in _LD.finditer(_ptx(f"int{bits}"))]
    issued = sum(v * b // 8 for v, b in loads) * 128 / (32 * 128)
    assert issued == bits / 8, (loads, issued)
    if bits >= 3:
        assert max(v for v, _ in loads) >= 2, loads                    # the big piece is a vector load


def _values(dtype, shape, seed):
    g = torch.Generator().manual_seed(seed)
    if dtype.is_float:
        return tk.unpack(tk.pack((torch.randn(shape, generator=g) * 3).clamp(-7, 7), dtype))
    lo, hi = D.int_range(dtype)
    return torch.randint(lo, hi + 1, shape, generator=g)


@pytest.mark.parametrize("backend", EXEC)
@pytest.mark.parametrize("dtype,rows,r,c", [
    (tk.int3, 32, 0, 128),            # 8 + 4 words
    (tk.uint5, 32, 3, 256),           # 16 + 4, rows past the edge
    (tk.float6_e2m3, 32, 0, 384),     # 16 + 8
    (tk.int7, 64, 5, 37),             # unaligned: 29 words as 16 + 8 + 4 + 1, columns past the edge
], ids=lambda v: getattr(v, "name", str(v)))
def test_split_window_values(backend, dtype, rows, r, c):
    n, k = 60, 450
    v = _values(dtype, (n, k), 7).double()
    want = torch.zeros(rows, 128, dtype=torch.float64)
    rr, cc = min(n, r + rows) - r, min(k, c + 128) - c
    want[:rr, :cc] = v[r:r + rr, c:c + cc]
    y = torch.full((rows, 128), float("nan"))
    align = 128 if c % 128 == 0 else 1
    window_at[(1,)](tk.pack(v, dtype), y, r, c // align, BN=rows, BK=128, ALIGN=align, backend=backend)
    assert torch.equal(y.double(), want)


@pytest.mark.parametrize("backend", EXEC)
@pytest.mark.parametrize("dtype", [tk.int4, tk.float8_e4m3, tk.int3], ids=lambda d: d.name)
def test_codes_past_the_row_end_read_as_zero_whatever_the_padding_holds(backend, dtype):
    """A row of 41 codes ends inside a word; its padding bits are set. The tile over the edge reads 0 there
    (int4's thread-local decode masks the row's last word, the gather path every element)."""
    n, k = 5, 41
    v = _values(dtype, (n, k), 3).double()
    packed = tk.pack(v, dtype)
    used = (k * dtype.bits) % 32
    garbage = torch.tensor(((0xFFFFFFFF << used) & 0xFFFFFFFF) - (1 << 32), dtype=torch.int64).to(torch.int32)
    packed.words[:, -1] |= garbage
    assert torch.equal(tk.unpack(packed).double(), v)         # the padding is not part of the tensor
    want = torch.zeros(32, 128, dtype=torch.float64)
    want[:n, :k - 32] = v[:, 32:]
    y = torch.full((32, 128), float("nan"))
    window_at[(1,)](packed, y, 0, 1, BN=32, BK=128, ALIGN=32, backend=backend)
    assert torch.equal(y.double(), want)


def test_signed_4_bit_codes_decode_without_cross_thread_traffic():
    """Signed 4-bit codes on a word boundary are shifted out of each thread's own words: no warp shuffles (the
    gather of the other widths needs them)."""
    pytest.importorskip("triton")
    assert "shfl.sync" not in _ptx("int4")
    assert "shfl.sync" in _ptx("int3") and "shfl.sync" in _ptx("uint4")
