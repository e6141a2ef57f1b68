"""A load's or store's own mask can imply a tile dimension's bound: ``(n0 + j) < F`` with ``F = rows // 2``
bounds the rows ``n0 + j`` and ``F + n0 + j`` of a (rows, K) tensor, so the Triton lowering drops its own
``< shape`` test there (as a hand-written kernel has none). Checked on the emitted source (the test is
dropped exactly where it is implied, and kept where it is not) and on numerics against torch on every
executing backend, with ragged sizes where the kept bound is what stops a read past the end."""
import pytest
import torch

import tilekit as tk
from tilekit import tolerances
from tilekit.backends import get_backend

EXEC = [b for b in ("reference", "triton", "opencl") if get_backend(b).available()[0]]

HALF, PLUS_ONE, OTHER_TENSOR, WHOLE = 0, 1, 2, 3


@tk.kernel
def halves(W, Y, MODE: tk.constexpr, BN: tk.constexpr = 8, BK: tk.constexpr = 16):
    """Y[n, :] = W[n, :] + 10 * W[F + n, :] for n < F (F = rows // 2), under a mask whose limit is F
    (HALF), F + 1 (PLUS_ONE, which does not bound the second half), Y's rows (OTHER_TENSOR), or, for
    WHOLE, W[n, :] alone masked by n < rows."""
    rows, _ = W.shape
    F = rows // 2
    n0 = tk.program_id(0) * BN
    k = tk.program_id(1) * BK
    n = (n0 + tk.arange(BN))[:, None]
    if MODE == HALF:
        ok = n < F
    elif MODE == PLUS_ONE:
        ok = n < F + 1
    elif MODE == OTHER_TENSOR:
        ok = n < Y.shape[0]
    else:
        ok = n < rows
    low = tk.load(W, (n0, k), (BN, BK), mask=ok)
    if MODE == WHOLE:
        tk.store(Y, (n0, k), low, mask=ok)
    else:
        high = tk.load(W, (F + n0, k), (BN, BK), mask=ok)
        tk.store(Y, (n0, k), low + 10.0 * high, mask=ok)


@tk.kernel
def expert_rows(W, B, Y, e, BN: tk.constexpr = 16, BK: tk.constexpr = 64):
    """Y[n, :] = W[e, n, :] @ B, with n < W.shape[1] and k < W.shape[2] both implied by the mask. The tile
    feeds a dot, so the expert index is a unit block whose scalar range check must still fold into one
    dimension's bound (an e out of range reads 0)."""
    _, rows, cols = W.shape
    n0 = tk.program_id(0) * BN
    ok = ((n0 + tk.arange(BN))[:, None] < rows) & (tk.arange(BK)[None, :] < cols)
    tile = tk.load(W, (e, n0, 0), (1, BN, BK), mask=ok[None, :, :])[0, :, :]
    b = tk.load(B, (0, 0), (BK, 16))
    tk.store(Y, (n0, 0), tk.mma(tile, b, tk.zeros((BN, 16), tk.float32)))


def _mask_lines(kernel, *args, **kwargs):
    src = kernel.source("triton", *args, **kwargs)
    return [line.strip() for line in src.splitlines() if "_mask =" in line]


def test_a_mask_that_implies_the_rows_bound_drops_the_rows_test():
    w, y = torch.randn(2 * 37 + 1, 45), torch.empty(37, 45)
    loads = [m for m in _mask_lines(halves, w, y, MODE=HALF) if "_W_mask" in m]
    assert len(loads) == 2
    for m in loads:  # rows n0 + j and F + n0 + j both < 2 * (rows // 2) <= rows; the columns keep theirs
        assert "t_W_shape0" not in m and "< t_W_shape1" in m
    (whole,) = [m for m in _mask_lines(halves, w, y, MODE=WHOLE) if "_W_mask" in m]
    assert "t_W_shape0" not in whole and "< t_W_shape1" in whole


@pytest.mark.parametrize("mode", [PLUS_ONE, OTHER_TENSOR])
def test_a_mask_that_does_not_imply_the_bound_keeps_the_test(mode):
    w, y = torch.randn(74, 45), torch.empty(37, 45)
    loads = [m for m in _mask_lines(halves, w, y, MODE=mode) if "_W_mask" in m]
    assert len(loads) == 2 and all("< t_W_shape0" in m for m in loads), loads
    # the store's own mask bounds Y's rows only when its limit is Y's own shape
    (store,) = [m for m in _mask_lines(halves, w, y, MODE=mode) if "_Y_mask" in m]
    assert ("t_Y_shape0)" in store.split("=", 1)[1]) == (mode == PLUS_ONE)


def _want(w, f, mode):
    if mode == WHOLE:
        return w.clone()
    limit = f + 1 if mode == PLUS_ONE else f
    padded = torch.cat([w, torch.zeros(max(0, f + limit - w.shape[0]), w.shape[1])])  # rows past W read 0
    return padded[:limit] + 10.0 * padded[f:f + limit]


@pytest.mark.parametrize("backend", EXEC)
@pytest.mark.parametrize("mode", [HALF, PLUS_ONE, OTHER_TENSOR, WHOLE])
def test_implied_and_kept_bounds_compute_the_same_as_torch(backend, mode):
    gen = torch.Generator().manual_seed(7 + mode)
    for rows in (74, 75):  # 2F and 2F + 1: at 74 the PLUS_ONE mask reaches row 74, one past W's end
        f = rows // 2
        w = torch.randn(rows, 45, generator=gen)
        out_rows = {PLUS_ONE: f + 1, WHOLE: rows}.get(mode, f)
        y = torch.full((out_rows, 45), float("nan"))
        halves[(tk.cdiv(out_rows, 8), tk.cdiv(45, 16))](w, y, MODE=mode, backend=backend)
        torch.testing.assert_close(y, _want(w, f, mode), msg=lambda m: f"rows={rows}: {m}")


def test_one_dimension_keeps_its_bound_for_a_unit_blocks_check():
    w, b, y = torch.randn(3, 21, 45), torch.randn(45, 16), torch.empty(21, 16)
    (load,) = [m for m in _mask_lines(expert_rows, w, b, y, 1) if "_W_mask" in m]
    # both tile dimensions are implied; one keeps its test, against the bound the expert's check selects
    assert "_W_bound" in load and "t_W_shape" not in load, load


@pytest.mark.parametrize("backend", EXEC)
def test_an_expert_out_of_range_still_masks_the_whole_tile(backend):
    gen = torch.Generator().manual_seed(3)
    w, b = torch.randn(3, 21, 45, generator=gen), torch.randn(45, 16, generator=gen)
    for e in (1, 2, 3, -1):
        y = torch.full((21, 16), float("nan"))
        expert_rows[(tk.cdiv(21, 16),)](w, b, y, e, backend=backend)
        want = w[e] @ b if 0 <= e < 3 else torch.zeros(21, 16)
        atol, rtol = tolerances.for_dtype(torch.float32)
        torch.testing.assert_close(y, want, atol=atol, rtol=rtol, msg=lambda m: f"e={e}: {m}")
