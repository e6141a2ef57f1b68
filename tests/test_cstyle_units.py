"""Targeted checks of the C-style emitter's semantics, executed through OpenCL on PoCL, against the reference
executor (which defines them): 16-bit float rounding, C-style integer division and shifts, float->int
casts, scalar reductions, reverse scans, transposes, register broadcasts, runtime branches around shared
memory, strided (non-contiguous) tensors; and the launch plumbing shared with CUDA/HIP."""
import numpy as np
import pytest
import torch

import tilekit as tk
from tilekit import tolerances
from tilekit.backends import get_backend
from tilekit.errors import BackendUnavailable

_ok, _why = get_backend("opencl").available()
needs_opencl = pytest.mark.skipif(not _ok, reason=f"OpenCL backend unavailable: {_why}")


def both(kernel, grid, *args, **kw):
    """Run on the reference executor and on OpenCL with identical copies of ``args``; return both copies."""
    ref = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    ocl = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    kernel[grid](*ref, backend="reference", **kw)
    kernel[grid](*ocl, backend="opencl", **kw)
    return ref, ocl


@tk.kernel
def convert16(X, H, B, BLOCK: tk.constexpr = 1024):
    p = tk.program_id(0)
    x = tk.load(X, (p * BLOCK,), (BLOCK,))
    tk.store(H, (p * BLOCK,), x.to(tk.float16))
    tk.store(B, (p * BLOCK,), x.to(tk.bfloat16))


@needs_opencl
def test_fp16_bf16_rounding_is_exact():
    """Every fp16 value, halfway points between neighbours (ties to even), subnormals, overflow, inf, NaN."""
    h = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.float16).float()
    h = h[~torch.isnan(h)]
    fin = h[torch.isfinite(h)].sort().values
    mids = (fin[1:].double() + fin[:-1].double()) / 2
    extra = torch.tensor([65504.0, 65519.99, 65520.0, 1e6, -1e6, 6e-8, 3e-8, 2.9e-8, 1e-40, float("inf"),
                          float("-inf"), float("nan"), 0.0, -0.0, 3.14159, 1.00390625, 1.0 + 2 ** -9])
    x = torch.cat([h, mids.float(), extra, torch.randn(5000) * 100]).contiguous()
    n = x.numel()
    H, B = torch.empty(n, dtype=torch.float16), torch.empty(n, dtype=torch.bfloat16)
    convert16[(tk.cdiv(n, 1024),)](x, H, B, backend="opencl")
    want_h, want_b = x.to(torch.float16), x.to(torch.bfloat16)
    nan = torch.isnan(x)
    assert torch.equal(H[~nan].view(torch.int16), want_h[~nan].view(torch.int16))
    assert torch.equal(B[~nan].view(torch.int16), want_b[~nan].view(torch.int16))
    assert torch.isnan(H[nan]).all() and torch.isnan(B[nan]).all()


@tk.kernel
def int_ops(A, Bv, Q, R, SL, SR, F2I, X, BLOCK: tk.constexpr = 64):
    p = tk.program_id(0)
    a = tk.load(A, (p * BLOCK,), (BLOCK,))
    b = tk.load(Bv, (p * BLOCK,), (BLOCK,))
    x = tk.load(X, (p * BLOCK,), (BLOCK,))
    tk.store(Q, (p * BLOCK,), a // b)
    tk.store(R, (p * BLOCK,), a % b)
    tk.store(SL, (p * BLOCK,), a << (b & 63))
    tk.store(SR, (p * BLOCK,), a >> (b & 63))
    tk.store(F2I, (p * BLOCK,), x.to(tk.int32))


@needs_opencl
def test_integer_semantics_match_the_reference():
    """C truncating division, x/0 and INT_MIN/-1 defined, shifts past the width, saturating float->int."""
    g = torch.Generator().manual_seed(0)
    n = 301
    a = torch.randint(-2**31, 2**31 - 1, (n,), generator=g, dtype=torch.int64).to(torch.int32)
    b = torch.randint(-50, 50, (n,), generator=g, dtype=torch.int32)
    a[:6] = torch.tensor([-2**31, 7, -7, 7, -2**31, 5], dtype=torch.int32)
    b[:6] = torch.tensor([-1, -2, 2, 0, 0, 40], dtype=torch.int32)
    x = torch.randn(n, generator=g) * 3e9
    x[:6] = torch.tensor([float("nan"), float("inf"), -float("inf"), 2.9e9, -2.9e9, -0.99])
    outs = [torch.empty(n, dtype=torch.int32) for _ in range(5)]
    ref, ocl = both(int_ops, (tk.cdiv(n, 64),), a, b, *outs, x)
    for name, r, o in zip(["//", "%", "<<", ">>", "float->int"], ref[2:7], ocl[2:7]):
        assert torch.equal(r, o), f"{name}: opencl {o[:8].tolist()} vs reference {r[:8].tolist()}"
    assert ref[2][3] == 7 and ref[6][0] == 0  # x // 0 is x; NaN -> 0


@tk.kernel
def scalar_reduce(X, S, M, BLOCK: tk.constexpr = 1024):
    x = tk.load(X, (0,), (BLOCK,))
    tk.store(S, (0,), tk.sum(x, axis=0))
    m = tk.load(X, (0,), (BLOCK,), other=-float("inf"))
    tk.store(M, (0,), tk.max(m, axis=0))


@needs_opencl
def test_reduction_to_a_scalar():
    x = torch.randn(1000) + 0.5
    S, M = torch.full((1,), float("nan")), torch.full((1,), float("nan"))
    scalar_reduce[(1,)](x, S, M, backend="opencl")
    tolerances.assert_close(S, x.double().sum().reshape(1), torch.float32)
    assert M.item() == x.max().item()


@tk.func
def affine_combine(a_l, b_l, a_r, b_r):
    return a_l * a_r, a_r * b_l + b_r


@tk.kernel
def scans(A, Bx, H, C, BM: tk.constexpr = 4, BN: tk.constexpr = 256):
    pm = tk.program_id(0)
    a = tk.load(A, (pm * BM, 0), (BM, BN), other=1.0)
    b = tk.load(Bx, (pm * BM, 0), (BM, BN))
    aa, bb = tk.associative_scan((a, b), 1, affine_combine, reverse=True)
    tk.store(H, (pm * BM, 0), bb)
    tk.store(C, (pm * BM, 0), tk.cumsum(b, axis=1, reverse=True))


@needs_opencl
def test_reverse_scans_with_a_non_commutative_combine():
    g = torch.Generator().manual_seed(1)
    A = torch.rand(7, 200, generator=g) * 0.5 + 0.4
    B = torch.randn(7, 200, generator=g)
    H, C = torch.full((7, 200), float("nan")), torch.full((7, 200), float("nan"))
    ref, ocl = both(scans, (2,), A, B, H, C)
    tolerances.assert_close(ocl[2], ref[2], torch.float32)
    tolerances.assert_close(ocl[3], ref[3], torch.float32)
    want = torch.flip(torch.cumsum(torch.flip(B.double(), [1]), 1), [1])
    tolerances.assert_close(ocl[3], want, torch.float32)


@tk.kernel
def layout_moves(X, Idx, Y, Z, flag, BM: tk.constexpr = 32, BN: tk.constexpr = 16):
    """A transpose, a register column broadcast, a gather with loaded indices and a runtime branch
    whose one side uses shared memory."""
    x = tk.load(X, (0, 0), (BM, BN))
    idx = tk.load(Idx, (0,), (BM,))
    rowmax = tk.max(x, axis=1)
    y = x - rowmax[:, None]
    if flag > 0:
        y = y + tk.sum(x, axis=0)[None, :]
    tk.store(Y, (0, 0), y)
    g = tk.load(X, (idx, 0), (BM, BN), mask=(idx >= 0)[:, None])
    tk.store(Z, (0, 0), (g.T * 2.0).T)


@needs_opencl
@pytest.mark.parametrize("flag", [0, 1])
def test_cross_thread_layout_changes(flag):
    g = torch.Generator().manual_seed(2)
    X = torch.randn(29, 13, generator=g)
    Idx = torch.randint(-1, 29, (30,), generator=g, dtype=torch.int32)
    Y, Z = torch.full((29, 13), float("nan")), torch.full((30, 13), 7.0)
    ref, ocl = both(layout_moves, (1,), X, Idx, Y, Z, flag)
    tolerances.assert_close(ocl[2], ref[2], torch.float32)
    tolerances.assert_close(ocl[3], ref[3], torch.float32)
    assert (ref[3][Idx < 0] == 0).all()


@tk.kernel
def scale_rows(X, Y, s, BM: tk.constexpr = 16, BN: tk.constexpr = 16):
    pm, pn = tk.program_id(0), tk.program_id(1)
    x = tk.load(X, (pm * BM, pn * BN), (BM, BN))
    tk.store(Y, (pm * BM, pn * BN), x * s)


@needs_opencl
def test_strided_views_and_timing_are_reported():
    """Non-contiguous tensors (a transpose, a column slice) are read and written through their strides;
    the launch reports copy time apart from kernel time."""
    base = torch.randn(40, 37)
    X = base.T                      # strides (1, 37)
    out = torch.zeros(50, 45)
    Y = out[3:40, 5:45]             # a window of a bigger tensor: offset and row stride 45
    scale_rows[(3, 3)](X, Y, 2.5, backend="opencl")
    assert torch.equal(Y, X * 2.5)
    assert out[:3].abs().sum() == 0 and out[:, :5].abs().sum() == 0  # nothing outside the window
    spec, _ = scale_rows.specialize(*scale_rows.bind((X, Y, 2.5), {})[:2], {}, backend="opencl")
    timing = scale_rows.compiled(spec).last_timing
    assert set(timing) >= {"copy_in_s", "kernel_s", "copy_out_s"} and timing["kernel_s"] > 0


def test_flattened_arguments_match_the_c_signature():
    """The argument list every C launcher passes (CuPy for CUDA/HIP, PyOpenCL): pointer, shapes, strides
    per tensor, int32 each; packed tensors carry their word strides; bools become int32."""
    from tilekit.backends.cstyle import flatten_args
    X = torch.randn(6, 5)
    Y = torch.empty(6, 5)
    spec, _ = scale_rows.specialize(*scale_rows.bind((X, Y.T.contiguous().T, 1.5), {})[:2], {},
                                    backend="reference")
    fn = scale_rows._ir(spec)
    from tilekit.backends.cstyle import param_plan
    seen = []
    flat = flatten_args(param_plan(fn), {"X": X, "Y": Y, "s": 1.5}, lambda n, t: seen.append(n) or f"<{n}>")
    assert seen == ["X", "Y"]
    assert flat[:5] == ["<X>", 6, 5, 5, 1] and flat[5:10] == ["<Y>", 6, 5, 5, 1]
    assert isinstance(flat[1], np.int32) and isinstance(flat[-1], np.float32) and flat[-1] == 1.5
    src = scale_rows.source("cuda", X, Y, 1.5)
    for param in ("const float* t_X_ptr", "int t_X_shape1", "int t_X_stride0", "float* t_Y_ptr", "float s_s"):
        assert param in src


def test_cuda_and_hip_launch_say_why_they_cannot_run_here():
    X, Y = torch.randn(20, 20), torch.empty(20, 20)
    for backend, present in (("cuda", torch.cuda.is_available() and torch.version.hip is None),
                             ("hip", torch.cuda.is_available() and torch.version.hip is not None)):
        if present:
            continue
        with pytest.raises(BackendUnavailable, match="GPU"):
            scale_rows[(2, 2)](X, Y, 1.0, backend=backend)


@pytest.mark.skipif(not (torch.cuda.is_available() and torch.version.hip is None),
                    reason="needs an NVIDIA GPU with CUDA torch, CuPy and NVRTC; none on this machine")
def test_cuda_launch_matches_reference_on_gpu():  # pragma: no cover - runs only where a GPU is
    from tilekit.examples import matmul
    A = torch.randn(100, 70, device="cuda", dtype=torch.float16)
    B = torch.randn(70, 90, device="cuda", dtype=torch.float16)
    C = torch.empty(100, 90, device="cuda")
    matmul[(2, 2)](A, B, C, backend="cuda")
    torch.cuda.synchronize()
    tolerances.assert_close(C, (A.float() @ B.float()), torch.float16)


def test_one_emitter_three_dialects():
    """The three sources differ only in what a dialect owns: indices, barriers, qualifiers, matrix ops."""
    A, B, C = (torch.empty(64, 64, dtype=torch.float16), torch.empty(64, 64, dtype=torch.float16),
               torch.empty(64, 64))
    from tilekit.examples import matmul
    cu, hip, cl = (matmul.source(b, A, B, C) for b in ("cuda", "hip", "opencl"))
    assert "__syncthreads();" in cu and "nvcuda::wmma::mma_sync" in cu and "blockIdx.x" in cu
    assert "__builtin_amdgcn_mfma_f32_16x16x16f16" in hip and "__syncthreads();" in hip
    assert "barrier(CLK_LOCAL_MEM_FENCE);" in cl and "__local" in cl and "get_group_id(0)" in cl
    assert "wmma" not in cl and "mfma" not in cl
