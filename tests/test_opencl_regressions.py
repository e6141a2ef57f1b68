"""OpenCL regressions that need a fresh process (PoCL reads its settings once, at start-up)."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("pyopencl", reason="the OpenCL backend needs pyopencl (pip install 'tilekit[opencl]')")

TESTS = Path(__file__).resolve().parent


def test_branch_results_survive_a_barrier_join_under_pinned_threads(tmp_path):
    """A runtime `if` whose branches stage through shared memory, then an epilogue on the branch result.
    Before the join barrier, PoCL with pinned worker threads got whole work-groups wrong every time."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(TESTS)!r})
        import corpus
        rng = torch.Generator().manual_seed(449)
        args = corpus.CASES_BY_NAME["matmul_epilogue"].make_inputs(rng, (41, 15, 65), torch.float16, 0)
        want = torch.relu(corpus._matmul_ref(args)[0])
        for _ in range(5):
            C = torch.full_like(args["C"], float("nan"))
            corpus.matmul_epilogue[(3, 5)](args["A"], args["B"], args["Bias"], C, args["has_bias"],
                                           BM=16, BN=16, BK=64, ACT="relu", backend="opencl")
            err = (C.double() - want).abs().max().item()
            assert err < 0.05, err
        print("ok")
    """))
    env = {**os.environ, "POCL_AFFINITY": "1", "TILEKIT_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


# -- the selective-scan kernel whose Out PoCL never wrote (issue 7, bug 2 of repros/opencl_scalar_and_store.py) --

import torch  # noqa: E402

import tilekit as tk  # noqa: E402
from tilekit import tolerances  # noqa: E402


@tk.func
def _ssm_combine(a_l, b_l, a_r, b_r):
    return a_l * a_r, b_l * a_r + b_r


@tk.kernel
def _selective_scan(U, Delta, A, Bm, Cm, Dv, Z, DeltaBias, Out, LastState, GATE: tk.constexpr, SKIP: tk.constexpr,
                    CMUL: tk.constexpr, LAST: tk.constexpr, BD: tk.constexpr = 4, N: tk.constexpr = 16,
                    CH: tk.constexpr = 32):
    Bsz, Dim, L = U.shape
    b = tk.program_id(0)
    d0 = tk.program_id(1) * BD
    a = tk.load(A, (d0, 0), (BD, N)).to(tk.float32)
    dskip = tk.load(Dv, (d0,), (BD,)).to(tk.float32)
    dbias = tk.load(DeltaBias, (d0,), (BD,)).to(tk.float32)
    h = tk.zeros((BD, N), tk.float32)
    t_last = tk.arange(CH)[None, None, :] == CH - 1
    for t0 in tk.range(0, L, CH):
        valid = (t0 + tk.arange(CH)) < L
        u = tk.load(U, (b, d0, t0), (1, BD, CH)).reshape((BD, CH)).to(tk.float32)
        dt = tk.softplus(tk.load(Delta, (b, d0, t0), (1, BD, CH)).reshape((BD, CH)).to(tk.float32) + dbias[:, None])
        bt = tk.load(Bm, (b, 0, t0), (1, N, CH)).reshape((N, CH)).to(tk.float32)
        ct = tk.load(Cm, (b, 0, t0), (1, N, CH)).reshape((N, CH)).to(tk.float32)
        z = tk.load(Z, (b, d0, t0), (1, BD, CH)).reshape((BD, CH)).to(tk.float32)
        v3 = valid[None, None, :]
        dA = tk.where(v3, tk.exp(dt[:, None, :] * a[:, :, None]), 1.0)
        dBu = tk.where(v3, (dt * u)[:, None, :] * bt[None, :, :], 0.0)
        a_cum, h_loc = tk.associative_scan((dA, dBu), 2, _ssm_combine)
        hs = a_cum * h[:, :, None] + h_loc
        if CMUL:
            y = tk.sum(hs * ct[None, :, :], axis=1)
        else:
            y = tk.sum(hs, axis=1)
        if SKIP:
            y = y + u * dskip[:, None]
        if GATE:
            y = y * (z * tk.sigmoid(z))
        tk.store(Out, (b, d0, t0), y.reshape((1, BD, CH)).to(Out.dtype))
        h = tk.sum(tk.where(t_last, hs, 0.0), axis=2)
    if LAST:
        tk.store(LastState, (b, d0, 0), h.reshape((1, BD, N)))


_SCAN_REFERENCE = {}


@pytest.mark.parametrize("num_warps", [1, 2, 4])
@pytest.mark.parametrize("flags", [(0, 0, 0, 0), (0, 1, 0, 0), (1, 1, 1, 1)], ids=["plain", "skip", "all"])
def test_selective_scan_writes_every_output(flags, num_warps):
    """With `y = y + u * dskip[:, None]`, fp16 and 128 work-items, Out was never written (every element kept
    its initial value). The C is race-free with uniform barriers and right with -cl-opt-disable: PoCL's
    work-group loops dropped a store whose parallel region began at an earlier barrier in the loop body.
    The OpenCL dialect now puts a barrier before every store inside a loop (barrier_before_loop_stores)."""
    G, S, C, LA = flags
    rng = torch.Generator().manual_seed(1234)
    Bsz, Dim, L, N, BD, CH = 2, 8, 50, 16, 4, 32  # L not a multiple of CH: the last chunk is ragged
    dtype = torch.float16
    u = torch.randn(Bsz, Dim, L, generator=rng).to(dtype)
    delta = (torch.randn(Bsz, Dim, L, generator=rng) * 0.5).to(dtype)
    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(Dim, 1) * torch.rand(Dim, 1, generator=rng).add(0.5)
    Bm = torch.randn(Bsz, N, L, generator=rng).to(dtype)
    Cm = torch.randn(Bsz, N, L, generator=rng).to(dtype)
    D = torch.randn(Dim, generator=rng)
    z = torch.randn(Bsz, Dim, L, generator=rng).to(dtype)
    dbias = torch.rand(Dim, generator=rng) - 2.0
    res = {}
    for backend in ("reference", "opencl"):
        if backend == "reference" and flags in _SCAN_REFERENCE:  # the reference is slow; it has no num_warps
            res[backend] = _SCAN_REFERENCE[flags]
            continue
        out = torch.full((Bsz, Dim, L), 12344.0, dtype=dtype)
        last = torch.full((Bsz, Dim, N), 12344.0)
        opts = {"num_warps": num_warps} if backend == "opencl" else {}
        _selective_scan[(Bsz, Dim // BD)](u, delta, A, Bm, Cm, D, z, dbias, out, last, GATE=G, SKIP=S, CMUL=C,
                                          LAST=LA, BD=BD, N=N, CH=CH, backend=backend, **opts)
        res[backend] = (out, last)
    _SCAN_REFERENCE[flags] = res["reference"]
    out, last = res["opencl"]
    assert int((out == 12344).sum()) == 0
    tolerances.assert_close(out, res["reference"][0].float(), torch.float16)
    if LA:
        tolerances.assert_close(last, res["reference"][1], torch.float32)


# -- a uniform runtime `if` around staged loads and stores (found by the SSM family's state update) --

@tk.kernel
def _update_rows_if_valid(State, X, BD: tk.constexpr = 8, BN: tk.constexpr = 8):
    b = tk.program_id(0)
    if b >= 0:  # a runtime scalar condition; the broadcast inside stages through shared memory
        s = tk.load(State, (b, 0, 0), (1, BD, BN)).reshape((BD, BN))
        u = tk.load(X, (b, 0), (1, BD)).reshape((BD,))
        tk.store(State, (b, 0, 0), (s * 2.0 + u[:, None]).reshape((1, BD, BN)))


def test_barriers_under_a_runtime_branch_build_unoptimized(tmp_path):
    """At PoCL's -O this gave values of 1e32 and then 'double free or corruption' (host heap corrupted)
    with 32 and 128 work-items; right with -cl-opt-disable, which such kernels now get. In a fresh
    process: a corrupted heap must not take the test session down."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(TESTS)!r})
        from test_opencl_regressions import _update_rows_if_valid
        for num_warps in (1, 4):
            S = torch.randn(3, 6, 7); X = torch.randn(3, 6); want = S * 2 + X[:, :, None]
            _update_rows_if_valid[(3,)](S, X, backend="opencl", num_warps=num_warps)
            assert torch.allclose(S, want), (S - want).abs().max().item()
        print("ok")
    """))
    env = {**os.environ, "TILEKIT_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0 and "ok" in r.stdout, (r.returncode, r.stderr[-3000:])


@tk.kernel
def dequant_tiles(W, S, Y, GROUP: tk.constexpr, BN: tk.constexpr, BK: tk.constexpr):
    """Y = codes(W) * S per group: a packed window staged in shared memory, then a scale tile broadcast
    through shared memory (a barrier between the codes' extraction and their use)."""
    N, K = W.shape
    n0 = tk.program_id(0) * BN
    for k in tk.range(0, K, BK):
        code = tk.load(W, (n0, k), (BN, BK)).to(tk.float32)
        s = tk.load(S, (n0, k // GROUP), (BN, 1)).to(tk.float32)
        tk.store(Y, (n0, k), code * s)


@pytest.mark.parametrize("num_warps", [4, 8])
def test_packed_codes_survive_a_barrier_with_idle_threads(num_warps):
    """At 8 warps a 64 x 16 int2 tile has fewer chunks than threads. Extracting its codes under the chunk guard,
    PoCL 3.0's loopvec work-group loops lost them across the scale's barrier: every product wrong (W2 group-48
    lowbit GEMM). The OpenCL dialect extracts on every thread (unguarded_window_extract)."""
    import corpus
    gen = torch.Generator().manual_seed(5)
    vals = corpus.representable(tk.int2)
    w = vals[torch.randint(0, vals.numel(), (37, 144), generator=gen)].float()
    s = (torch.rand(37, 3, generator=gen) + 0.5).to(torch.float16)
    y = torch.full((37, 144), float("nan"))
    dequant_tiles[(1,)](tk.pack(w, tk.int2), s, y, GROUP=48, BN=64, BK=16, num_warps=num_warps, backend="opencl")
    torch.testing.assert_close(y.double(), w.double() * s.double().repeat_interleave(48, 1), rtol=0, atol=0)
