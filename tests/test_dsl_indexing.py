"""Constant indexing (``x[:, k]`` drops an axis) and static slicing (``x[a:b]``) of tiles, on every executing
backend (register tiles and virtual ones), compiled for CUDA and HIP, and the errors for bad indices."""
import pytest
import torch

import tilekit as tk
from tilekit.backends import get_backend

from cstyle_common import assert_compile_with_hipcc, assert_compile_with_nvrtc

EXEC = [b for b in ("reference", "triton", "opencl") if get_backend(b).available()[0]]


@tk.kernel
def pick_and_slice(X, Col, Mid, Last, K: tk.constexpr, A: tk.constexpr, B: tk.constexpr,
                   BM: tk.constexpr = 8, BN: tk.constexpr = 16):
    pm = tk.program_id(0)
    x = tk.load(X, (pm * BM, 0, 0), (BM, BN, 4))          # a register tile
    tk.store(Col, (pm * BM, 0), x[:, :, K])                # (BM, BN): axis 2 dropped
    tk.store(Mid, (pm * BM, 0, 0), x[:, A:B, 1:3])         # static slices of two axes
    tk.store(Last, (pm * BM,), x[:, -1, 3])                # negative index, two axes dropped


@tk.kernel
def virtual_slice(Out, BN: tk.constexpr = 32):
    r = tk.arange(BN)[None, :] * 10 + tk.arange(4)[:, None]   # virtual: never materialized
    tk.store(Out, (0, 0), r[1:3, 8:24][None, :, :][0])


def _run(backend, rng_seed=0):
    g = torch.Generator().manual_seed(rng_seed)
    x = torch.randn(19, 16, 4, generator=g)
    col = torch.full((19, 16), float("nan"))
    mid = torch.full((19, 8, 2), float("nan"))
    last = torch.full((19,), float("nan"))
    pick_and_slice[(3,)](x, col, mid, last, K=2, A=4, B=12, backend=backend)
    return x, col, mid, last


@pytest.mark.parametrize("backend", EXEC)
def test_constant_index_and_static_slice_of_a_register_tile(backend):
    x, col, mid, last = _run(backend)
    assert torch.equal(col, x[:, :, 2])
    assert torch.equal(mid, x[:, 4:12, 1:3])
    assert torch.equal(last, x[:, -1, 3])


@pytest.mark.parametrize("backend", EXEC)
def test_static_slice_of_a_virtual_tile(backend):
    out = torch.full((2, 16), -1, dtype=torch.int32)
    virtual_slice[(1,)](out, backend=backend)
    full = torch.arange(32)[None, :] * 10 + torch.arange(4)[:, None]
    assert torch.equal(out, full[1:3, 8:24].to(torch.int32))


def _sources(dialect):
    x = torch.randn(19, 16, 4)
    yield pick_and_slice.source(dialect, x, x[:, :, 0], x[:, :8, :2], x[:, 0, 0], K=2, A=4, B=12)
    yield virtual_slice.source(dialect, torch.zeros(2, 16, dtype=torch.int32))


def test_indexing_kernels_compile_with_nvrtc():
    assert_compile_with_nvrtc(_sources("cuda"))


def test_indexing_kernels_compile_with_hipcc():
    assert_compile_with_hipcc(_sources("hip"))


@tk.kernel
def bad_slice(X, Y, A: tk.constexpr, B: tk.constexpr):
    x = tk.load(X, (0,), (16,))
    tk.store(Y, (0,), x[A:B])


@tk.kernel
def bad_index(X, Y, K: tk.constexpr):
    x = tk.load(X, (0, 0), (4, 16))
    tk.store(Y, (0,), x[K])


@tk.kernel
def runtime_index(X, Y, k):
    x = tk.load(X, (0, 0), (4, 16))
    tk.store(Y, (0,), x[k])


@tk.kernel
def stepped_slice(X, Y):
    x = tk.load(X, (0,), (16,))
    tk.store(Y, (0,), x[0:16:2])


def test_slice_and_index_errors_name_the_problem_and_the_line():
    x, y = torch.zeros(16), torch.zeros(16)
    with pytest.raises(tk.CompileError, match="length 3, which is not a power of two") as e:
        bad_slice[(1,)](x, y, A=2, B=5, backend="reference")
    assert "test_dsl_indexing.py" in str(e.value) and "x[A:B]" in str(e.value)
    with pytest.raises(tk.CompileError, match="is empty"):
        bad_slice[(1,)](x, y, A=5, B=5, backend="reference")
    x2 = torch.zeros(4, 16)
    with pytest.raises(tk.CompileError, match="index 4 is out of range for an axis of size 4"):
        bad_index[(1,)](x2, y, K=4, backend="reference")
    with pytest.raises(tk.CompileError, match="compile-time int"):
        runtime_index[(1,)](x2, y, 1, backend="reference")
    with pytest.raises(tk.CompileError, match="no step"):
        stepped_slice[(1,)](x, y, backend="reference")


def test_index_of_the_first_axis_and_negative_slice_bounds():
    """x[K] on a 2-d tile drops the first axis; x[-8:] counts from the end (reference = numpy's rules)."""
    x2 = torch.randn(4, 16)
    y = torch.full((16,), float("nan"))
    bad_index[(1,)](x2, y, K=-1, backend="reference")
    assert torch.equal(y, x2[-1])
    x = torch.randn(16)
    y8 = torch.full((8,), float("nan"))
    bad_slice[(1,)](x, y8, A=-8, B=None, backend="reference")
    assert torch.equal(y8, x[-8:])


def test_slices_compile_with_triton_for_sm90():
    """Triton has no static slice; tl.gather with constant indices stands in, and compiles for a real GPU."""
    pytest.importorskip("triton")
    m = lambda *s: torch.empty(*s, device="meta")
    art = pick_and_slice.compile("sm_90", m(19, 16, 4), m(19, 16), m(19, 8, 2), m(19), K=2, A=4, B=12,
                                 backend="triton")
    assert art.binary[:4] == b"\x7fELF" and art.resources["spills"] == 0, art.report()
