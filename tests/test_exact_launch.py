"""The exact-layout warm launch (tilekit/kernel.py ``_ExactLaunchers``): a repeated call with the previous
call's argument layouts skips the launch key and passes sizes and strides as constants. Each test warms
it up, then changes one thing its guard must notice (sizes, strides, dtype, a lazy bit, requires_grad,
an in-place resize, the process-wide check_bounds) and compares with torch."""
import importlib

import pytest
import torch

import tilekit as tk
from tilekit.kernel import Kernel

tk_kernel = importlib.import_module("tilekit.kernel")  # the module (tilekit.kernel is also the decorator)

BACKENDS = ["reference", "triton"]


@tk.kernel
def affine2d(X, Y, alpha, BM: tk.constexpr = 8, BN: tk.constexpr = 16):
    r, c = tk.program_id(0) * BM, tk.program_id(1) * BN
    x = tk.load(X, (r, c), (BM, BN))
    tk.store(Y, (r, c), (x * alpha + 1).to(Y.dtype))


def _grid(y):
    return (tk.cdiv(y.shape[0], 8), tk.cdiv(y.shape[1], 16))


def _launch(k, x, y, alpha=2.0, backend="triton", **kw):
    k[_grid(y)](x, y, alpha, backend=backend, **kw)
    return y


def _want(x, alpha=2.0, dtype=None):
    return (x.double() * alpha + 1).to(dtype or x.dtype)


def _fresh():
    return Kernel(affine2d.fn)


def _warm_kernel(backend, rows, cols, y=None):
    """A fresh kernel launched 3 times on an (rows, cols) input (its exact launcher exists), and the input."""
    _skip_unless_launchable(backend)
    k, x = _fresh(), torch.randn(rows, cols)
    for _ in range(3):
        _launch(k, x, torch.empty(rows, cols) if y is None else y, backend=backend)
    return k, x


def _skip_unless_launchable(backend):
    if backend == "triton":
        from tilekit.backends.triton import launch_unavailable_reason
        if launch_unavailable_reason():
            pytest.skip(launch_unavailable_reason())


@pytest.mark.parametrize("backend", BACKENDS)
def test_warm_calls_take_the_exact_path_and_skip_the_key(backend, monkeypatch):
    _skip_unless_launchable(backend)
    k = _fresh()
    x, y = torch.randn(37, 50), torch.empty(37, 50)
    _launch(k, x, y, backend=backend)
    _launch(k, x, y, backend=backend)  # the key path hits and generates the exact launcher
    assert k._exact.last is not None

    def no_key(*a, **kw):
        raise AssertionError("the warm call built a launch key")
    monkeypatch.setattr(k, "launch_key", no_key)
    x2 = torch.randn(37, 50)  # another tensor with the same layout
    torch.testing.assert_close(_launch(k, x2, torch.empty(37, 50), backend=backend), _want(x2))
    torch.testing.assert_close(_launch(k, x2, torch.empty(37, 50), -0.5, backend=backend), _want(x2, -0.5))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_new_layout_is_not_launched_with_the_old_sizes_or_strides(backend):
    _skip_unless_launchable(backend)
    k = _fresh()
    g = torch.Generator().manual_seed(7)
    base = torch.randn(61, 45, generator=g)
    layouts = [base[:37, :29], base[:37, :29], base[5:, 3:], base.t()[:19, :53], base[::2, ::3], base[:37, :29],
               base[:1, :1], base.t()[:19, :53]]
    for x in layouts:  # the outputs are views of one buffer too: same strides, only the sizes change
        out = torch.full((61, 61), float("nan"))
        y = out[:x.shape[0], :x.shape[1]]
        torch.testing.assert_close(_launch(k, x, y, backend=backend), _want(x))
        assert out.isnan().sum() == out.numel() - y.numel()  # nothing written outside the view
    yt = torch.full((45, 61), float("nan")).t()  # a transposed output: its strides must be the real ones
    torch.testing.assert_close(_launch(k, base, yt, backend=backend), _want(base))
    torch.testing.assert_close(_launch(k, base, yt, backend=backend), _want(base))


@pytest.mark.parametrize("backend", BACKENDS)
def test_dtype_lazy_bits_and_requires_grad_change_the_path(backend):
    k, x = _warm_kernel(backend, 23, 33)
    xh = x.half()
    torch.testing.assert_close(_launch(k, xh, torch.empty(23, 33, dtype=torch.float16), backend=backend), _want(xh))
    neg = torch.complex(torch.randn(23, 33), x).conj().imag  # holds x un-negated in memory, with the neg bit
    assert neg.is_neg()
    torch.testing.assert_close(_launch(k, neg, torch.empty(23, 33), backend=backend), _want(-x))
    leaf = x.clone().requires_grad_()
    with torch.no_grad():
        out = _launch(k, leaf, torch.empty(23, 33), backend=backend)
    torch.testing.assert_close(out, _want(x))
    torch.testing.assert_close(_launch(k, x, torch.empty(23, 33), backend=backend), _want(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_in_place_resize_between_calls(backend):
    y = torch.empty(20, 30)
    k, x = _warm_kernel(backend, 20, 30, y)
    x.resize_(12, 45).normal_()  # same tensor objects, new sizes and strides (fits the storage)
    y.resize_(12, 45)
    torch.testing.assert_close(_launch(k, x, y, backend=backend), _want(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_overlapping_output_is_rejected_after_warm_calls(backend):
    k, x = _warm_kernel(backend, 16, 32)
    with pytest.raises(ValueError, match="share memory"):
        _launch(k, x, torch.empty(1, 32).expand(16, 32), backend=backend)


def test_process_wide_check_bounds_switches_the_variant_after_warm_calls(monkeypatch):
    k, x = _warm_kernel("triton", 16, 32)
    builds = len(k._cache)
    monkeypatch.setattr(tk_kernel, "CHECK_BOUNDS", True)
    for _ in range(3):
        torch.testing.assert_close(_launch(k, x, torch.empty(16, 32)), _want(x))
    assert any(dict(key[3]).get("check_bounds") for key in k._cache), "no check_bounds variant was compiled"
    assert len(k._cache) > builds


def test_the_exact_launchers_are_bounded_and_cycled_layouts_hit(monkeypatch):
    monkeypatch.setattr(tk_kernel._ExactLaunchers, "LIMIT", 3)
    k = _fresh()
    xs = [torch.randn(n, 17) for n in range(1, 8)]
    for _ in range(2):
        for x in xs:
            torch.testing.assert_close(_launch(k, x, torch.empty(x.shape), backend="reference"), _want(x))
    assert len(k._exact.by_layout) == 3
    calls = []
    monkeypatch.setattr(k, "launch_key", lambda *a: calls.append(a) or (lambda args, kwargs: ()))
    for x in xs[1:4]:  # the layouts that got the 3 exact launchers (the first launch adds none), in turn
        torch.testing.assert_close(_launch(k, x, torch.empty(x.shape), backend="reference"), _want(x))
    assert not calls


@tk.kernel
def add2d(X, Z, Y, BM: tk.constexpr = 8, BN: tk.constexpr = 16):
    r, c = tk.program_id(0) * BM, tk.program_id(1) * BN
    tk.store(Y, (r, c), tk.load(X, (r, c), (BM, BN)) + tk.load(Z, (r, c), (BM, BN)))


def _add(k, x, z, y):
    k[(tk.cdiv(y.shape[0], 8), tk.cdiv(y.shape[1], 16))](x, z, y, backend="triton")
    return y


def _padded(z, shape):
    out = torch.zeros(shape)
    out[:z.shape[0], :z.shape[1]] = z
    return out


def test_equal_layouts_share_parameters_and_unequal_ones_do_not():
    """An exact launcher compiles a variant where a tensor whose sizes or strides equal an earlier one's
    uses that one's parameters (Z's masks and offsets are X's); a call where they differ must not."""
    _skip_unless_launchable("triton")
    k = Kernel(add2d.fn)
    g = torch.Generator().manual_seed(3)
    x, z = torch.randn(21, 35, generator=g), torch.randn(21, 35, generator=g)
    for _ in range(3):
        torch.testing.assert_close(_add(k, x, z, torch.empty(21, 35)), x + z)
    shared = [ck for ck in k._cache.values() if "t_Z_shape0 = t_X_shape0" in ck.source]
    assert shared and "t_Z_stride0 = t_X_stride0" in shared[0].source and "t_Y_shape0 = t_X_shape0" in shared[0].source
    zt = torch.randn(35, 21, generator=g).t()          # same sizes, other strides
    small = torch.randn(21, 64, generator=g)[:13, :30]  # other sizes and strides: reads past them are 0
    for other in (zt, small, z, zt, small):
        for _ in range(2):
            torch.testing.assert_close(_add(k, x, other, torch.empty(21, 35)), x + _padded(other, (21, 35)))


def test_aot_compiles_share_equal_layouts():
    meta = [torch.empty(256, 128, device="meta") for _ in range(3)]
    art = add2d.compile("sm_90", *meta)
    assert "t_Z_shape0 = t_X_shape0" in art.source and "t_Y_stride0 = t_X_stride0" in art.source
    other = add2d.compile("sm_90", meta[0], torch.empty(128, 256, device="meta").t(), meta[2])
    assert "t_Z_shape0 = t_X_shape0" in other.source and "t_Z_stride0 = " not in other.source  # transposed Z
