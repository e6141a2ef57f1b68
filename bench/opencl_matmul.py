"""OpenCL matmul on PoCL (the CPU) vs torch.matmul on the same CPU, fp32.

    python -m tilekit.bench.opencl_matmul            # 256^3, 512^3, 1024^3 and a tile sweep at 512^3
    python bench/opencl_matmul.py --sizes 256 --sweep-size 256 --repeat 3

Kernel time is the OpenCL profiling event of the launch; the copies between torch tensors and OpenCL
buffers are timed apart (they are the price of PoCL taking its own buffers, not of the kernel). Numbers
are informational: this shows the C path runs real work-groups at a sane speed, not that it beats MKL.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import tilekit as tk
from tilekit.examples import matmul  # the DESIGN.md contract kernel

DEFAULT = {"BM": 64, "BN": 64, "BK": 32, "num_warps": 4}
SWEEP = [dict(BM=bm, BN=bn, BK=bk, num_warps=nw)
         for bm, bn, bk, nw in [(32, 32, 32, 2), (32, 64, 32, 4), (64, 32, 16, 4), (64, 64, 8, 4), (64, 64, 16, 4),
                                (64, 64, 32, 4), (64, 64, 32, 8), (128, 64, 16, 8), (64, 128, 16, 8),
                                (128, 128, 16, 8)]]


def run_opencl(A, B, C, cfg, repeat):
    M, N = A.shape[0], B.shape[1]
    grid = (tk.cdiv(M, cfg["BM"]), tk.cdiv(N, cfg["BN"]))
    launch = matmul[grid]
    launch(A, B, C, backend="opencl", **cfg)  # build + warm-up
    ck = _compiled(A, B, C, cfg)
    kern, copies = [], []
    for _ in range(repeat):
        launch(A, B, C, backend="opencl", **cfg)
        t = ck.last_timing
        kern.append(t["kernel_s"])
        copies.append(t["copy_in_s"] + t["copy_out_s"])
    return min(kern), statistics.median(copies)


def _compiled(A, B, C, cfg):
    cx = {k: v for k, v in cfg.items() if k != "num_warps"}
    runtime, constexprs, options = matmul.bind((A, B, C), {**cx, "num_warps": cfg["num_warps"], "backend": "opencl"})
    spec, _ = matmul.specialize(runtime, constexprs, options)
    return matmul.compiled(spec)


def run_torch(A, B, repeat):
    torch.matmul(A, B)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        torch.matmul(A, B)
        best = min(best, time.perf_counter() - t0)
    return best


def gflops(n, s):
    return 2.0 * n ** 3 / s / 1e9


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--sweep-size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    from tilekit.backends.opencl import available, device_description
    ok, why = available()
    if not ok:
        raise SystemExit(f"OpenCL unavailable: {why}")
    print(f"device: {device_description()}; torch {torch.__version__} with {torch.get_num_threads()} threads")
    print(f"default config {DEFAULT}")
    print(f"{'size':>6} {'opencl GF/s':>12} {'torch GF/s':>11} {'ratio':>7} {'kernel ms':>10} {'copies ms':>10} {'max err':>9}")
    for n in args.sizes:
        g = torch.Generator().manual_seed(n)
        A, B = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        C = torch.full((n, n), float("nan"))
        k, c = run_opencl(A, B, C, DEFAULT, args.repeat)
        tt = run_torch(A, B, args.repeat)
        err = (C - A @ B).abs().max().item()
        print(f"{n:>6} {gflops(n, k):>12.1f} {gflops(n, tt):>11.1f} {tt / k:>7.3f} {k * 1e3:>10.2f} {c * 1e3:>10.2f} {err:>9.1e}")
    n = args.sweep_size
    g = torch.Generator().manual_seed(7)
    A, B = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    tt = run_torch(A, B, args.repeat)
    rows = []
    for cfg in SWEEP:
        C = torch.full((n, n), float("nan"))
        k, _ = run_opencl(A, B, C, cfg, max(2, args.repeat // 2))
        assert torch.allclose(C, A @ B, atol=1e-3, rtol=1e-3), f"config {cfg} computed a wrong product"
        rows.append((gflops(n, k), cfg))
    rows.sort(key=lambda r: r[0])
    print(f"\ntile sweep at {n}^3 ({len(rows)} configs, torch {gflops(n, tt):.1f} GF/s):")
    for gf, cfg in rows:
        print(f"  {gf:8.1f} GF/s  ratio {gf / gflops(n, tt):6.3f}  {cfg}")
    print(f"best  {rows[-1][0]:.1f} GF/s {rows[-1][1]}\nworst {rows[0][0]:.1f} GF/s {rows[0][1]}")


if __name__ == "__main__":
    main()
