"""Packed tile loads read their covering words as one contiguous, vectorised load per row and shift the codes
out in registers (packing.WordWindow). Values are checked on every executing backend for any window position
(ragged, negative, word-straddling), ranks 1-3, gathered (virtual) rows and loop offsets; the compiled code is
checked for what it loads: vector loads, and about ``bits / 8`` bytes per weight instead of 4-8."""
import re

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import corpus
import tilekit as tk
from tilekit.backends import get_backend
from tilekit.packing import WordWindow

EXEC = [b for b in ("reference", "triton", "opencl") if get_backend(b).available()[0]]


@tk.kernel
def window_1d(P, Y, c, BN: tk.constexpr = 64):
    tk.store(Y, (0,), tk.load(P, (c,), (BN,)).to(tk.float32))


@tk.kernel
def window_3d(P, Y, a, r, c, BR: tk.constexpr = 4, BN: tk.constexpr = 32):
    tk.store(Y, (0, 0, 0), tk.load(P, (a, r, c), (2, BR, BN)).to(tk.float32))


@tk.kernel
def rows_and_loop(P, Y, BN: tk.constexpr = 32):
    """Virtual gathered rows (reversed) and a column offset that is a loop variable (word-aligned for every
    bit width: a multiple of 32)."""
    M, N = P.shape
    rows = 7 - tk.arange(8)
    for k in tk.range(0, N, BN):
        tk.store(Y, (0, k), tk.load(P, (rows, k), (8, BN)).to(tk.float32))


def _values(wdtype, shape, seed):
    vals = corpus.representable(wdtype)
    g = torch.Generator().manual_seed(seed)
    return vals[torch.randint(0, vals.numel(), shape, generator=g)]


@pytest.mark.parametrize("backend", EXEC)
@settings(max_examples=6)
@given(wdtype=st.sampled_from(corpus.PACKED_DTYPES), n=st.integers(1, 150), c=st.integers(-70, 150),
       seed=st.integers(0, 2**31 - 1))
@example(wdtype=tk.int3, n=150, c=33, seed=0)
@example(wdtype=tk.uint5, n=97, c=-1, seed=1)
def test_rank1_window(backend, wdtype, n, c, seed):
    v = _values(wdtype, (n,), seed)
    want = torch.zeros(64, dtype=torch.float64)
    for j in range(64):
        if 0 <= c + j < n:
            want[j] = v[c + j]
    y = torch.full((64,), float("nan"))
    window_1d[(1,)](tk.pack(v, wdtype), y, c, backend=backend)
    assert torch.equal(y.double(), want)


@pytest.mark.parametrize("backend", EXEC)
@pytest.mark.parametrize("wdtype", [tk.int3, tk.int4, tk.float6_e2m3, tk.uint1], ids=lambda d: d.name)
def test_rank3_window_with_ragged_edges(backend, wdtype):
    v = _values(wdtype, (3, 5, 45), 11)
    canvas = torch.zeros(3 + 4, 5 + 8, 45 + 64, dtype=torch.float64)
    canvas[2:5, 4:9, 32:77] = v
    y = torch.full((2, 4, 32), float("nan"))
    window_3d[(1,)](tk.pack(v, wdtype), y, 1, 3, 29, backend=backend)
    assert torch.equal(y.double(), canvas[3:5, 7:11, 61:93])


@pytest.mark.parametrize("backend", EXEC)
@pytest.mark.parametrize("wdtype", [tk.int3, tk.int4, tk.int7, tk.float8_e4m3], ids=lambda d: d.name)
def test_gathered_rows_and_loop_offsets(backend, wdtype):
    v = _values(wdtype, (8, 96), 5)
    y = torch.full((8, 96), float("nan"))
    rows_and_loop[(1,)](tk.pack(v, wdtype), y, backend=backend)
    assert torch.equal(y.double(), v.flip(0).double())


def test_word_window_facts():
    w = WordWindow(3, 64, 64)          # int3 tile at a multiple of 64: 6 whole words, codes straddle
    assert (w.word_aligned, w.needed, w.padded, w.straddles, w.word_multiple) == (True, 6, 8, True, 2)
    w = WordWindow(4, 64, 64)          # int4: 8 words, no straddling, first word a multiple of 8
    assert (w.word_aligned, w.needed, w.padded, w.straddles, w.word_multiple) == (True, 8, 8, False, 8)
    w = WordWindow(4, 64, 1)           # unknown start: one more word for the first code's bit offset
    assert (w.word_aligned, w.needed, w.padded, w.straddles) == (False, 9, 16, True)


# ---- what the compiled code loads ---------------------------------------------------------------------

@tk.kernel
def dequant_tile(W, Out, BK: tk.constexpr = 32, BN: tk.constexpr = 64):
    k0, n0 = tk.program_id(0) * BK, tk.program_id(1) * BN
    tk.store(Out, (k0, n0), tk.load(W, (k0, n0), (BK, BN)).to(tk.float16))


_LD = re.compile(r"\bld\.global(?:\.[a-z]+)*?(?:\.v(\d))?\.(?:[bsuf])(\d+)\b")


def ptx_loads(ptx):
    """[(vector width, bits)] of every ld.global in ``ptx``."""
    return [(int(m.group(1) or 1), int(m.group(2))) for m in _LD.finditer(ptx)]


@pytest.mark.parametrize("dt,bits", [("int3", 3), ("int4", 4)])
def test_triton_packed_tile_loads_are_vectors_of_about_bits_over_8_bytes(dt, bits):
    """The kernel is straight-line and only W is loaded, so each ld.global runs once per thread."""
    pytest.importorskip("triton")
    art = dequant_tile.compile("sm_90", f"{dt}[4096,4096]", "fp16[4096,4096]")
    loads = ptx_loads(art.asm["ptx"])
    issued = sum(v * b // 8 for v, b in loads) * 128 / (32 * 64)   # 4 warps
    assert loads and all(v >= 2 for v, _ in loads), loads           # vector loads only
    assert issued <= 0.5, (loads, issued)                           # was 8 bytes per weight
    assert issued >= bits / 8                                       # and nothing is skipped


@pytest.mark.parametrize("dt,vec", [("int3", 2), ("int4", 4)])
def test_nvrtc_packed_tile_stages_words_with_vector_loads(dt, vec):
    nvrtc = pytest.importorskip("tilekit.backends.cuda.nvrtc")
    ok, why = nvrtc.available()
    if not ok:
        pytest.skip(f"NVRTC unavailable: {why}")
    art = dequant_tile.compile("sm_90a", f"{dt}[4096,4096]", "fp16[4096,4096]", backend="cuda")
    loads = ptx_loads(art.asm["ptx"])
    assert (vec, 32) in loads, loads                                 # the staging fast path
    assert "tk_packed_code" not in art.source                        # no per-element word loads
