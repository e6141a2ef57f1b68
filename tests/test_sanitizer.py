"""The reference executor's sanitizer: an access through an index tile that leaves the tensor, with no
mask covering it, raises ``tilekit.OutOfBoundsError`` naming the op and the kernel's source line.
Block loads and stores at scalar offsets are edge-masked automatically and never raise."""
import inspect

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import tilekit as tk

HERE = __file__


def line_of(kernel, text):
    lines, start = inspect.getsourcelines(kernel.fn)
    hits = [start + i for i, line in enumerate(lines) if text in line]
    assert len(hits) == 1, text
    return hits[0]


@tk.kernel
def gather_unmasked(X, Idx, Out, BM: tk.constexpr = 16, BN: tk.constexpr = 16):
    rows = tk.load(Idx, (0,), (BM,))
    v = tk.load(X, (rows, 0), (BM, BN))
    tk.store(Out, (0, 0), v)


@tk.kernel
def gather_masked(X, Idx, Out, BM: tk.constexpr = 16, BN: tk.constexpr = 16):
    n_src = X.shape[0]
    rows = tk.load(Idx, (0,), (BM,))
    ok = (rows >= 0) & (rows < n_src)
    v = tk.load(X, (rows, 0), (BM, BN), other=-1.0, mask=ok[:, None])
    tk.store(Out, (0, 0), v)


@tk.kernel
def scatter_unmasked(X, Idx, Out, BM: tk.constexpr = 16, BN: tk.constexpr = 16):
    rows = tk.load(Idx, (0,), (BM,))
    tk.store(Out, (rows, 0), tk.load(X, (0, 0), (BM, BN)))


@tk.kernel
def scatter_masked(X, Idx, Out, BM: tk.constexpr = 16, BN: tk.constexpr = 16):
    rows = tk.load(Idx, (0,), (BM,))
    tk.store(Out, (rows, 0), tk.load(X, (0, 0), (BM, BN)), mask=(rows < Out.shape[0])[:, None])


@tk.kernel
def atomic_unmasked(X, Idx, Out, BM: tk.constexpr = 16, BN: tk.constexpr = 16):
    cols = tk.load(Idx, (0,), (BN,))
    tk.atomic_add(Out, (0, cols), tk.load(X, (0, 0), (BM, BN)))


def _args(idx, n_src=16, n_out=16):
    X = torch.randn(n_src, 16)
    return X, torch.tensor(idx, dtype=torch.int32), torch.zeros(n_out, 16)


BAD_ROW = list(range(15)) + [16]      # row 16 of a 16-row tensor
NEGATIVE_ROW = [-1] + list(range(15))


@pytest.mark.parametrize("idx,coord", [(BAD_ROW, "[16, 0]"), (NEGATIVE_ROW, "[-1, 0]")])
def test_unmasked_gather_out_of_bounds_is_caught(idx, coord):
    X, Idx, Out = _args(idx)
    with pytest.raises(tk.OutOfBoundsError) as info:
        gather_unmasked[(1,)](X, Idx, Out, backend="reference")
    msg = str(info.value)
    line = line_of(gather_unmasked, "v = tk.load(X, (rows, 0), (BM, BN))")
    assert f"{HERE}:{line}:" in msg
    assert "tk.load reads X" + coord in msg and "[16, 16]" in msg and "mask=" in msg
    assert "v = tk.load(X, (rows, 0), (BM, BN))" in msg  # the source line itself


def test_masked_gather_passes_and_fills_other():
    idx = [3, 16, 0, -2, 15, 7, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    X, Idx, Out = _args(idx)
    gather_masked[(1,)](X, Idx, Out, backend="reference")
    for i, r in enumerate(idx):
        want = X[r] if 0 <= r < 16 else torch.full((16,), -1.0)
        assert torch.equal(Out[i], want), i


def test_unmasked_scatter_out_of_bounds_is_caught():
    X, Idx, Out = _args(BAD_ROW, n_out=16)
    with pytest.raises(tk.OutOfBoundsError) as info:
        scatter_unmasked[(1,)](X, Idx, Out, backend="reference")
    msg = str(info.value)
    line = line_of(scatter_unmasked, "tk.store(Out, (rows, 0)")
    assert f"{HERE}:{line}:" in msg and "tk.store writes Out[16, 0]" in msg


def test_masked_scatter_passes():
    X, Idx, Out = _args(BAD_ROW, n_out=16)
    scatter_masked[(1,)](X, Idx, Out, backend="reference")
    assert torch.equal(Out[:15], X[:15]) and torch.equal(Out[15], torch.zeros(16))


def test_unmasked_atomic_add_out_of_bounds_is_caught():
    X, Idx, Out = _args(list(range(1, 17)))
    with pytest.raises(tk.OutOfBoundsError) as info:
        atomic_unmasked[(1,)](X, Idx, Out, backend="reference")
    msg = str(info.value)
    line = line_of(atomic_unmasked, "tk.atomic_add(Out, (0, cols)")
    assert f"{HERE}:{line}:" in msg and "tk.atomic_add writes Out[0, 16]" in msg


def test_error_names_the_program():
    X, Idx, Out = _args(BAD_ROW)
    with pytest.raises(tk.OutOfBoundsError, match=r"program id \(0, 0, 0\)"):
        gather_unmasked[(1,)](X, Idx, Out, backend="reference")


# ---- edge masking of block accesses: any offset, any shape, never an error -----------------------------------

@tk.kernel
def window_copy(X, Y, r, c, BM: tk.constexpr = 16, BN: tk.constexpr = 32):
    tk.store(Y, (r, c), tk.load(X, (r, c), (BM, BN), other=7.0) + 1)


@given(m=st.integers(0, 40), n=st.integers(0, 40), r=st.integers(-40, 60), c=st.integers(-60, 60),
       block=st.sampled_from([(16, 32), (1, 1), (64, 8)]))
@example(m=1, n=1, r=0, c=0, block=(16, 32))
@example(m=17, n=33, r=16, c=32, block=(16, 32))     # the last partial tile
@example(m=5, n=5, r=-16, c=-32, block=(16, 32))     # wholly before the tensor
@example(m=5, n=5, r=5, c=0, block=(16, 32))         # just past the end
@example(m=0, n=7, r=0, c=0, block=(16, 32))         # an empty tensor
def test_edge_masked_block_access_never_raises(m, n, r, c, block):
    BM, BN = block
    X = torch.randn(m, n)
    Y = torch.full((m, n), float("nan"))
    window_copy[(1,)](X, Y, r, c, BM=BM, BN=BN, backend="reference")
    inside = torch.zeros(m, n, dtype=torch.bool)
    inside[max(r, 0):max(r + BM, 0), max(c, 0):max(c + BN, 0)] = True
    assert torch.equal(Y[inside], X[inside] + 1)
    assert torch.isnan(Y[~inside]).all()  # nothing outside the window was written


@pytest.mark.parametrize("r,c", [(-16, -32), (-3, 5), (10, -7), (5, 30)])
def test_edge_masking_agrees_on_triton(r, c):
    X = torch.randn(13, 37)
    outs = []
    for backend in ("reference", "triton"):
        Y = torch.full((13, 37), float("nan"))
        window_copy[(1,)](X, Y, r, c, backend=backend)
        outs.append(Y)
    assert torch.equal(outs[0].nan_to_num(-1), outs[1].nan_to_num(-1))
    assert (~torch.isnan(outs[0])).sum() == max(0, min(13, r + 16) - max(r, 0)) * max(0, min(37, c + 32) - max(c, 0))


@tk.kernel
def padded_read(X, Y, r, BM: tk.constexpr = 16, BN: tk.constexpr = 32):
    tk.store(Y, (0, 0), tk.load(X, (r, 0), (BM, BN), other=7.0))


def test_out_of_window_loads_read_other():
    X = torch.randn(5, 6)
    Y = torch.full((16, 32), float("nan"))
    padded_read[(1,)](X, Y, -2, backend="reference")
    want = torch.full((16, 32), 7.0)
    want[2:7, :6] = X
    assert torch.equal(Y, want)
