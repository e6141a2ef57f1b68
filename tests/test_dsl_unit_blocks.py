"""Unit blocks (a tile dimension of size 1 at a scalar offset) and the bounds they imply, on every executing
backend against torch: a row or column past the tensor's end masks the whole tile, for loads (``other``
fills it) and for stores (nothing written). Also ``is_nonnegative`` through ``if`` results: an index
clamped at 0 by a compare (a select or an if statement) needs no lower-bound mask, an unguarded one keeps it (and still masks)."""
import pytest
import torch

import tilekit as tk
from tilekit.backends import get_backend

EXEC = [b for b in ("reference", "triton", "opencl") if get_backend(b).available()[0]]


@tk.kernel
def copy_row(X, Y, row, BN: tk.constexpr = 16):
    """Y[p, :] = X[row + p, :] (a (1, BN) tile per program); rows past X's end read as -7."""
    p = tk.program_id(0)
    c = tk.program_id(1) * BN
    tile = tk.load(X, (row + p, c), (1, BN), other=-7.0)
    tk.store(Y, (p, c), tile)


@tk.kernel
def store_row(X, Y, row, BN: tk.constexpr = 16):
    """Y[row + p, :] = X[p, :]: rows past Y's end are not written."""
    p = tk.program_id(0)
    c = tk.program_id(1) * BN
    tk.store(Y, (row + p, c), tk.load(X, (p, c), (1, BN)))


@tk.kernel
def copy_col(X, Y, col, BM: tk.constexpr = 8):
    """Y[:, p] = X[:, col + p] (a (BM, 1) tile); columns past X's end read as 0."""
    p = tk.program_id(0)
    r = tk.program_id(1) * BM
    tk.store(Y, (r, p), tk.load(X, (r, col + p), (BM, 1)))


@pytest.mark.parametrize("backend", EXEC)
def test_a_unit_row_past_the_end_masks_the_whole_load(backend):
    x = torch.randn(5, 37)
    y = torch.full((4, 37), float("nan"))
    copy_row[(4, tk.cdiv(37, 16))](x, y, 3, backend=backend)  # rows 3, 4 in range; 5, 6 past the end
    want = torch.full((4, 37), -7.0)
    want[:2] = x[3:5]
    torch.testing.assert_close(y, want)


@pytest.mark.parametrize("backend", EXEC)
def test_a_unit_row_before_the_start_masks_the_whole_load(backend):
    x = torch.randn(5, 37)
    y = torch.full((3, 37), float("nan"))
    copy_row[(3, tk.cdiv(37, 16))](x, y, -2, backend=backend)  # rows -2, -1 masked, row 0 read
    want = torch.full((3, 37), -7.0)
    want[2] = x[0]
    torch.testing.assert_close(y, want)


@pytest.mark.parametrize("backend", EXEC)
def test_a_unit_row_past_the_end_stores_nothing(backend):
    x = torch.randn(4, 29)
    y = torch.full((6, 29), float("nan"))
    store_row[(4, tk.cdiv(29, 16))](x, y, 4, backend=backend)  # rows 4, 5 written; 6, 7 past the end
    want = torch.full((6, 29), float("nan"))
    want[4:] = x[:2]
    torch.testing.assert_close(y, want, equal_nan=True)
    y = torch.full((3, 29), float("nan"))
    store_row[(4, tk.cdiv(29, 16))](x, y, -1, backend=backend)  # row -1 dropped, rows 0..2 written
    want = x[1:4].clone()
    torch.testing.assert_close(y, want)


@pytest.mark.parametrize("backend", EXEC)
def test_a_unit_column_past_the_end_masks_the_whole_load(backend):
    x = torch.randn(19, 6)
    y = torch.full((19, 4), float("nan"))
    copy_col[(4, tk.cdiv(19, 8))](x, y, 4, backend=backend)
    want = torch.zeros(19, 4)
    want[:, :2] = x[:, 4:6]
    torch.testing.assert_close(y, want)


@tk.kernel
def shifted_rows(X, Y, shift, CLAMP: tk.constexpr, BM: tk.constexpr = 8, BN: tk.constexpr = 16):
    """Y[r, :] = X[r - shift, :]: with CLAMP 1 or 2, the row start is clamped at 0 by a compare, so every row
    index is provably >= 0; without, rows before X's start must be masked."""
    r0 = tk.program_id(0) * BM - shift
    if CLAMP == 1:
        r0 = 0 if r0 < 0 else r0  # a select
    if CLAMP == 2:
        if r0 < 0:                # an if statement
            r0 = 0
    tile = tk.load(X, (r0, 0), (BM, BN))
    tk.store(Y, (tk.program_id(0) * BM, 0), tile)


def _x_mask(clamp):
    x, y = torch.randn(20, 16), torch.empty(20, 16)
    src = shifted_rows.source("triton", x, y, 3, CLAMP=clamp)
    (line,) = [line for line in src.splitlines() if "_X_mask =" in line]
    return line


def test_a_compare_guarded_row_start_needs_no_lower_bound_mask():
    assert ">= 0" in _x_mask(0)
    assert ">= 0" not in _x_mask(1) and "< t_X_shape0" in _x_mask(1)
    assert ">= 0" not in _x_mask(2) and "< t_X_shape0" in _x_mask(2)


@pytest.mark.parametrize("backend", EXEC)
def test_unguarded_negative_rows_are_still_masked(backend):
    x = torch.randn(20, 16)
    for clamp in (0, 1, 2):
        y = torch.full((24, 16), float("nan"))
        shifted_rows[(3,)](x, y, 3, CLAMP=clamp, backend=backend)
        if clamp:  # block 0 reads rows 0..7; blocks 1, 2 read from 5 and 13
            want = torch.cat([x[0:8], x[5:13], x[13:20], torch.zeros(1, 16)])
        else:      # rows -3..-1 read as 0
            want = torch.cat([torch.zeros(3, 16), x, torch.zeros(1, 16)])
        torch.testing.assert_close(y, want)


@tk.kernel
def lse_rows(L, Y, shift, SCALED: tk.constexpr, BM: tk.constexpr = 16):
    """Y[b, h, m] = L[b + shift, h, m] from a (1, 1, BM) block; rows of a batch past L's end read as -1.
    Unscaled, the block is only reshaped to (BM,); SCALED uses it 3-D first."""
    b = tk.program_id(0)
    h = tk.program_id(1)
    m0 = tk.program_id(2) * BM
    block = tk.load(L, (b + shift, h, m0), (1, 1, BM), other=-1.0)
    if SCALED:
        rows = (block * 2.0).reshape((BM,)) * 0.5
    else:
        rows = block.reshape((BM,))
    tk.store(Y, (b, h, m0), rows.reshape((1, 1, BM)))


@pytest.mark.parametrize("backend", EXEC)
@pytest.mark.parametrize("scaled", [False, True])
def test_a_unit_batch_past_the_end_reads_other_reshaped_or_not(backend, scaled):
    gen = torch.Generator().manual_seed(11)
    lse = torch.randn(3, 5, 37, generator=gen)
    for shift in (0, 2):  # with 2, batches 1 and 2 are past L's end
        y = torch.full((3, 5, 37), float("nan"))
        lse_rows[(3, 5, tk.cdiv(37, 16))](lse, y, shift, SCALED=scaled, backend=backend)
        want = torch.full((3, 5, 37), -1.0)
        want[:3 - shift] = lse[shift:]
        torch.testing.assert_close(y, want, msg=lambda m: f"shift={shift}: {m}")


def test_a_pointer_adds_the_row_offsets_once_then_the_last_dimension():
    lse, y = torch.randn(3, 5, 37), torch.empty(3, 5, 37)
    src = lse_rows.source("triton", lse, y, 0, SCALED=True)
    (load,) = [ln.strip() for ln in src.splitlines() if "tl.load(t_L_ptr" in ln]
    # the batch, head (and row) offsets are summed in the index type, then one pointer add per element
    assert "t_L_ptr + (" in load and "_i0 * t_L_stride0 + " in load and ") + " in load, load
