"""Scalars from memory: ``tk.load(T, offsets)`` (no shape) is a runtime scalar, ``.reshape(())`` of a 1-element
tile is one, and ``other=`` may be a runtime scalar. Run on every executing backend, and compiled for CUDA
(NVRTC) and HIP (hipcc) where those toolchains are present."""
import pytest
import torch

import tilekit as tk
from tilekit.backends import get_backend

from cstyle_common import assert_compile_with_hipcc, assert_compile_with_nvrtc

EXEC = [b for b in ("reference", "triton", "opencl") if get_backend(b).available()[0]]


@tk.kernel
def scalar_via_reshape(EIds, Out):
    e = tk.load(EIds, (tk.program_id(0),), (1,)).reshape(())
    tk.store(Out, (tk.program_id(0) * 4,), tk.full((4,), e, tk.int32))


@tk.kernel
def reduced_tile_to_scalar(X, Out, BN: tk.constexpr = 64):
    """A register tile of one element (a reduction's output, not a load) reshaped to a scalar."""
    row = tk.load(X, (tk.program_id(0), 0), (1, BN))
    s = tk.sum(row, axis=1).reshape(())
    tk.store(Out, (tk.program_id(0), 0), row * 0 + s)


@tk.kernel
def expert_scale(Ids, Scale, X, Out, BN: tk.constexpr = 64):
    """MoE-style: a scalar expert id read from memory selects a row of per-expert scales."""
    t = tk.program_id(0)
    e = tk.load(Ids, (t,))                          # a runtime scalar
    s = tk.load(Scale, (e, 0), (1, BN))
    d = tk.load(Scale, (e, BN - 1), shape=())       # shape=() is the same thing
    x = tk.load(X, (t, 0), (1, BN))
    tk.store(Out, (t, 0), x * s + d)


@tk.kernel
def masked_scalar(X, Out, n, fill):
    """Scalar loads past the end (or masked off) read other=, here a runtime scalar."""
    i = tk.program_id(0)
    a = tk.load(X, (i,), other=fill)
    b = tk.load(X, (i - 1,), other=fill, mask=i % 2 == 0)
    tk.store(Out, (i, 0), tk.full((1, 2), 0.0, tk.float32) + tk.where(tk.arange(2) == 0, a, b)[None, :])


@tk.kernel
def runtime_other(X, Y, fill, BM: tk.constexpr = 16, BN: tk.constexpr = 32):
    pm = tk.program_id(0)
    x = tk.load(X, (pm * BM, 0), (BM, BN), other=fill)
    tk.store(Y, (pm * BM, 0), x, )


@pytest.mark.parametrize("backend", EXEC)
def test_reshape_of_a_loaded_element_is_a_scalar(backend):
    """Regression (issue 7 bug 1): OpenCL used the private array as the scalar (garbage)."""
    ids = torch.tensor([2, -7, 40000], dtype=torch.int32)
    out = torch.zeros(12, dtype=torch.int32)
    scalar_via_reshape[(3,)](ids, out, backend=backend)
    assert out.tolist() == [2] * 4 + [-7] * 4 + [40000] * 4


@pytest.mark.parametrize("backend", EXEC)
def test_reshape_of_a_reduced_register_tile_is_a_scalar(backend):
    x = torch.randn(3, 50)
    out = torch.full((3, 50), float("nan"))
    reduced_tile_to_scalar[(3,)](x, out, backend=backend)
    torch.testing.assert_close(out, x.sum(1, keepdim=True).expand(3, 50), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", EXEC)
def test_scalar_load_selects_expert(backend):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 5, (7,), generator=g, dtype=torch.int32)
    scale = torch.randn(5, 64, generator=g)
    x = torch.randn(7, 64, generator=g)
    out = torch.full((7, 64), float("nan"))
    expert_scale[(7,)](ids, scale, x, out, backend=backend)
    want = x * scale[ids.long()] + scale[ids.long(), 63][:, None]
    torch.testing.assert_close(out, want)


@pytest.mark.parametrize("backend", EXEC)
def test_scalar_load_masks_and_runtime_other(backend):
    x = torch.randn(5)
    out = torch.full((7, 2), float("nan"))
    masked_scalar[(7,)](x, out, 5, -3.5, backend=backend)
    want = torch.full((7, 2), -3.5)
    want[:5, 0] = x
    for i in range(7):
        if i % 2 == 0 and 1 <= i <= 5:
            want[i, 1] = x[i - 1]
    torch.testing.assert_close(out, want)


@pytest.mark.parametrize("backend", EXEC)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int32], ids=str)
def test_runtime_other_fills_the_edges(backend, dtype):
    x = (torch.randn(21, 19) * 10).to(dtype)
    y = torch.zeros(32, 32, dtype=dtype)
    fill = -2.0 if dtype.is_floating_point else -99
    runtime_other[(2,)](x, y, fill, backend=backend)
    want = torch.full((32, 32), fill, dtype=dtype)
    want[:21, :19] = x
    assert torch.equal(y, want)


def test_scalar_load_errors():
    @tk.kernel
    def gather_scalar(X, Y):
        tk.store(Y, (0,), tk.full((2,), tk.load(X, (tk.arange(2),)), tk.float32))

    @tk.kernel
    def tile_other(X, Y):
        tk.store(Y, (0,), tk.load(X, (0,), (4,), other=tk.zeros((4,), tk.float32)))

    @tk.kernel
    def float_other_for_int(X, Y, f):
        tk.store(Y, (0,), tk.load(X, (0,), (4,), other=f))

    x = torch.zeros(4)
    with pytest.raises(tk.CompileError, match="scalar offsets") as e:
        gather_scalar[(1,)](x, x, backend="reference")
    assert "test_dsl_scalars.py" in str(e.value)
    with pytest.raises(tk.CompileError, match="must be a scalar"):
        tile_other[(1,)](x, x, backend="reference")
    xi = torch.zeros(4, dtype=torch.int32)
    with pytest.raises(tk.CompileError, match="cannot hold"):
        float_other_for_int[(1,)](xi, xi, 1.5, backend="reference")


def _c_sources(dialect):
    ids = torch.tensor([1], dtype=torch.int32)
    x = torch.randn(2, 64)
    yield scalar_via_reshape.source(dialect, ids, torch.zeros(4, dtype=torch.int32))
    yield reduced_tile_to_scalar.source(dialect, x, x)
    yield expert_scale.source(dialect, ids, x, x, x)
    yield masked_scalar.source(dialect, x[0], x, 5, 1.0)
    yield runtime_other.source(dialect, x, x, 1.0)
    yield packed_scalar.source(dialect, tk.pack(torch.randint(-4, 4, (3, 45)), tk.int3), x[0], 1, 2)


def test_scalar_kernels_compile_with_nvrtc():
    assert_compile_with_nvrtc(_c_sources("cuda"))  # one arch keeps CI short; the corpus compile tests cover sm_80


def test_scalar_kernels_compile_with_hipcc():
    assert_compile_with_hipcc(_c_sources("hip"))


@tk.kernel
def packed_scalar(P, Out, r, c):
    """A scalar load of a packed tensor decodes one code; outside the tensor it reads code 0."""
    v = tk.load(P, (r, c)).to(tk.float32)
    tk.store(Out, (0,), tk.full((2,), v, tk.float32))


@pytest.mark.parametrize("backend", EXEC)
@pytest.mark.parametrize("wdtype", [tk.int3, tk.float6_e2m3], ids=lambda d: d.name)
def test_scalar_load_of_a_packed_tensor(backend, wdtype):
    import corpus
    vals = corpus.representable(wdtype)
    v = vals[torch.randint(0, vals.numel(), (3, 45), generator=torch.Generator().manual_seed(2))]
    p = tk.pack(v, wdtype)
    for r, c in ((0, 0), (2, 44), (1, 10), (1, 11), (3, 0), (0, 45)):
        out = torch.full((2,), float("nan"))
        packed_scalar[(1,)](p, out, r, c, backend=backend)
        want = float(v[r, c]) if r < 3 and c < 45 else 0.0
        assert out.tolist() == [want, want], (r, c)
