"""Host overhead of tilekit's launch path, and cold trace-to-source time.

* Warm launch: µs per ``kernel[grid](...)`` call with a warm cache, the final Triton launch replaced by a
  no-op, so only tilekit's own work is timed (argument keying, cache lookup, grid, argument
  flattening). Target: <= 10 µs.
* Cold: ms from a fresh kernel object to its generated Triton source (front end, passes, emitter).

    python -m tilekit.bench.host_overhead [--calls 20000]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import tilekit as tk
from tilekit.bench.abstraction_cost import tk_matmul, tk_softmax
from tilekit.kernel import Kernel


class _NoLaunch:
    """Stands in for the Triton JIT function: indexing by grid gives a function that does nothing."""

    def __getitem__(self, grid):
        return self._run

    @staticmethod
    def _run(*args, **kwargs):
        return None


def warm_launch_us(kernel, args, grid, calls, repeats=5, **kw):
    launcher = kernel[grid]
    launcher(*args, backend="triton", **kw)  # compile once
    for ck in kernel._cache.values():
        ck._jit = _NoLaunch()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            kernel[grid](*args, backend="triton", **kw)
        samples.append((time.perf_counter() - t0) / calls * 1e6)
    return min(samples), statistics.median(samples)


def cold_source_ms(fn, args, repeats=5):
    samples = []
    for _ in range(repeats):
        k = Kernel(fn)  # fresh: no parsed source, no IR, no cache
        t0 = time.perf_counter()
        k.source("triton", *args)
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20000)
    args = ap.parse_args(argv)
    A = torch.randn(512, 384, dtype=torch.float16)
    B = torch.randn(384, 256, dtype=torch.float16)
    C = torch.empty(512, 256, dtype=torch.float16)
    X = torch.randn(64, 1000)
    Y = torch.empty_like(X)
    mm_grid = lambda meta: (tk.cdiv(512, meta["BM"]), tk.cdiv(256, meta["BN"]))
    rows = [
        ("matmul, positional args", warm_launch_us(tk_matmul, (A, B, C), mm_grid, args.calls)),
        ("matmul, constexpr kwargs", warm_launch_us(tk_matmul, (A, B, C), mm_grid, args.calls, BM=128, BN=64)),
        ("softmax, tuple grid", warm_launch_us(tk_softmax, (X, Y), (64,), args.calls)),
    ]
    print("Warm launch overhead (final Triton launch replaced by a no-op; target <= 10 us)")
    print(f"  {'':<28} {'best':>7}  {'median':>7}  (of 5 repeats; best is the cost, median shows the noise)")
    for name, (best, median) in rows:
        print(f"  {name:<28} {best:7.2f}  {median:7.2f} us/call  {'ok' if best <= 10 else 'OVER TARGET'}")
    print("Cold trace-to-source (fresh kernel -> Triton source)")
    print(f"  matmul                       {cold_source_ms(tk_matmul.fn, (A, B, C)):7.2f} ms")
    print(f"  softmax                      {cold_source_ms(tk_softmax.fn, (X, Y)):7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
