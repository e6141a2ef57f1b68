"""Host overhead of tilekit's launch path, and cold trace-to-source time.

* Warm launch: µs per ``kernel[grid](...)`` call with a warm cache, the final Triton launch replaced by a
  no-op, so only tilekit's own work is timed (the exact-layout guard or the launch key, grid, argument
  flattening). Measured against the floor in the same run: a Python function that reads the tensors'
  pointers, shapes and strides, evaluates the grid and calls the same no-op. Target: <= 1.5x the floor.
  The last rows cycle through 6 layouts (each call misses the previous call's exact launcher and finds
  its own by layout) and take the key path (no exact launchers: the cost of a call with a new layout).
* Op level: ``torch.ops.tilekit.matmul`` on a tiny input (config lookup in the tuning table included,
  the kernel launch stubbed) against the custom-op dispatch alone (a custom op that only allocates its
  output).
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
from tilekit.kernel import Kernel, _ExactLaunchers


TARGET_RATIO = 1.5


class _NoLaunch:
    """Stands in for the Triton JIT function: indexing by grid gives a function that does nothing."""

    def __getitem__(self, grid):
        return self._run

    @staticmethod
    def _run(*args, **kwargs):
        return None


def _stub_launches(kernel):
    for ck in kernel._cache.values():
        ck._jit = _NoLaunch()


def _time_us(call, calls, repeats=5):
    """(best, median) µs per call over ``repeats`` runs of ``calls`` calls."""
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            call()
        samples.append((time.perf_counter() - t0) / calls * 1e6)
    return min(samples), statistics.median(samples)


def warm_launch_us(kernel, args, grid, calls, repeats=5, **kw):
    kernel[grid](*args, backend="triton", **kw)  # compile once
    _stub_launches(kernel)
    return _time_us(lambda: kernel[grid](*args, backend="triton", **kw), calls, repeats)


def rotating_launch_us(kernel, layouts, grid, calls, repeats=5):
    """Like ``warm_launch_us``, cycling through several argument layouts: with more of them than the
    kernel keeps recent exact launchers for, every call takes the key path."""
    for args in layouts:
        kernel[grid](*args, backend="triton")
    _stub_launches(kernel)

    def cycle():
        for args in layouts:
            kernel[grid](*args, backend="triton")
    best, median = _time_us(cycle, max(calls // len(layouts), 1), repeats)
    return best / len(layouts), median / len(layouts)


def floor_us(args, grid, meta, calls, repeats=5):
    """The irreducible cost of a launch from Python: each tensor's pointer, shape and strides read, the grid
    evaluated, and the same no-op called with the flattened arguments."""
    noop = _NoLaunch()

    def launch():
        flat = []
        for a in args:
            flat += [a.data_ptr(), *a.shape, *a.stride()]
        g = grid(meta) if callable(grid) else grid
        noop[g](*flat)
    return _time_us(launch, calls, repeats)


@torch.library.custom_op("tilekit_bench::alloc_only", mutates_args=())
def _alloc_only(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.empty((a.shape[0], b.shape[1]), dtype=a.dtype, device=a.device)


def op_level_us(calls, repeats=5):
    """(tilekit::matmul with its launch stubbed, the custom-op dispatch alone), each (best, median) µs."""
    import tilekit.ops  # noqa: F401  (registers the op and installs the tuning-table lookup)
    from tilekit.ops import use_backend
    from tilekit.ops.matmul.kernels import matmul_kernel
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with use_backend("triton"):
        torch.ops.tilekit.matmul(a, b)  # compile once
        _stub_launches(matmul_kernel)
        op = _time_us(lambda: torch.ops.tilekit.matmul(a, b), calls, repeats)
    dispatch = _time_us(lambda: torch.ops.tilekit_bench.alloc_only(a, b), calls, repeats)
    return op, dispatch


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
    mm_meta = {"BM": 128, "BN": 64}
    rows = [
        ("matmul, positional args", warm_launch_us(tk_matmul, (A, B, C), mm_grid, args.calls),
         floor_us((A, B, C), mm_grid, mm_meta, args.calls)),
        ("matmul, constexpr kwargs", warm_launch_us(tk_matmul, (A, B, C), mm_grid, args.calls, BM=128, BN=64),
         floor_us((A, B, C), mm_grid, mm_meta, args.calls)),
        ("softmax, tuple grid", warm_launch_us(tk_softmax, (X, Y), (64,), args.calls),
         floor_us((X, Y), (64,), {}, args.calls)),
    ]
    views = [(A[:512 - i, :384 - i], B[:384 - i, :256 - i], C[:512 - i, :256 - i]) for i in range(6)]
    rows.append(("matmul, 6 layouts in turn", rotating_launch_us(Kernel(tk_matmul.fn), views, mm_grid, args.calls),
                 floor_us(views[-1], mm_grid, mm_meta, args.calls), "(each finds its exact launcher)"))
    limit, _ExactLaunchers.LIMIT = _ExactLaunchers.LIMIT, 0  # no exact launchers: every call builds a key
    try:
        rows.append(("matmul, the key path", warm_launch_us(Kernel(tk_matmul.fn), (A, B, C), mm_grid, args.calls),
                     floor_us((A, B, C), mm_grid, mm_meta, args.calls), "(a call whose layout has no exact launcher)"))
    finally:
        _ExactLaunchers.LIMIT = limit
    print(f"Warm launch overhead (final Triton launch replaced by a no-op), against the floor measured beside it; "
          f"target <= {TARGET_RATIO}x")
    print(f"  {'':<28} {'best':>7}  {'median':>7}  {'floor':>7}  {'ratio':>6}  (us/call, best of 5 repeats; "
          f"median shows the noise)")
    for name, (best, median), (floor, _), *how in rows:
        ratio = best / floor
        print(f"  {name:<28} {best:7.2f}  {median:7.2f}  {floor:7.2f}  {ratio:6.2f}  "
              f"{'ok' if ratio <= TARGET_RATIO else 'OVER TARGET'} {' '.join(how)}")
    (op, _), (dispatch, _) = op_level_us(args.calls // 4 or 1)
    print("Op level: torch.ops.tilekit.matmul, 8x8 fp32, launch stubbed (config lookup included)")
    print(f"  tilekit::matmul {op:7.2f} us/call; custom-op dispatch alone {dispatch:7.2f} us/call; "
          f"ratio {op / dispatch:5.2f}")
    print("Cold trace-to-source (fresh kernel -> Triton source)")
    print(f"  matmul                       {cold_source_ms(tk_matmul.fn, (A, B, C)):7.2f} ms")
    print(f"  softmax                      {cold_source_ms(tk_softmax.fn, (X, Y)):7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
