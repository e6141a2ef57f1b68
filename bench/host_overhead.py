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


_STUBBED = []  # (compiled kernel, its Triton function): main() puts them back, as the CI smoke test needs


def _stub_launches(kernel):
    for ck in kernel._cache.values():
        if hasattr(ck, "_jit"):  # the Triton variants; other backends' (an earlier CUDA compile) are not launched
            _STUBBED.append((ck, ck._jit))
            ck._jit = _NoLaunch()


def _paired_us(call, floor, calls, repeats=7):
    """((best, median), (best, median)) µs per call of ``call`` and ``floor``, timed in alternating runs of
    ``calls`` calls: the machine's speed drifts (shared cores), and alternating lets both see the same."""
    samples = ([], [])
    for _ in range(repeats):
        for fn, out in zip((call, floor), samples):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            out.append((time.perf_counter() - t0) / calls * 1e6)
    return tuple((min(x), statistics.median(x)) for x in samples)


def warm_launch(kernel, args, grid, **kw):
    """A warm ``kernel[grid](...)`` call, its Triton launch stubbed."""
    kernel.source("triton", *args, **kw)  # compile (not run: the interpreter would take seconds)
    _stub_launches(kernel)
    for _ in range(2):  # the first launch (checks, straight-line launcher), the second (its exact launcher)
        kernel[grid](*args, backend="triton", **kw)
    return lambda: kernel[grid](*args, backend="triton", **kw)


def rotating_launch(kernel, layouts, grid):
    """Warm calls cycling through several argument layouts (one call of the result launches each once)."""
    kernel.source("triton", *layouts[0])
    _stub_launches(kernel)
    for _ in range(2):  # as in warm_launch: each layout's exact launcher exists from its second call
        for args in layouts:
            kernel[grid](*args, backend="triton")

    def cycle():
        for args in layouts:
            kernel[grid](*args, backend="triton")
    return cycle


def floor(args, grid, meta, times=1):
    """The irreducible cost of a launch from Python: each tensor's pointer, shape and strides read, the grid
    evaluated, and the same no-op called with the flattened arguments (``times`` over)."""
    noop = _NoLaunch()

    def launch():
        for _ in range(times):
            flat = []
            for a in args:
                flat += [a.data_ptr(), *a.shape, *a.stride()]
            g = grid(meta) if callable(grid) else grid
            noop[g](*flat)
    return launch


@torch.library.custom_op("tilekit_bench::alloc_only", mutates_args=())
def _alloc_only(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.empty((a.shape[0], b.shape[1]), dtype=a.dtype, device=a.device)


def op_level_us(calls, repeats=7):
    """{case: best µs} of tilekit::matmul on 8x8 with its launch stubbed, with no table entry and with one (a
    provider answering from memory, as the tuning lookup does when warm), and of the custom-op dispatch
    alone; the three timed in alternating runs."""
    import tilekit.ops  # noqa: F401  (registers the op and installs the tuning-table lookup)
    from tilekit.ops import dispatch, use_backend
    from tilekit.ops.matmul.kernels import matmul_kernel
    from tilekit.ops.matmul.op import _default_config
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    entry = dict(_default_config((8, 8, 8), a.dtype, a.device))  # valid, and the same compiled variant
    lookup = dispatch.set_config_provider(None)
    dispatch.set_config_provider(lookup)
    cases = {"no table entry": (lookup, lambda: torch.ops.tilekit.matmul(a, b)),
             "a table entry": (lambda *key: entry, lambda: torch.ops.tilekit.matmul(a, b)),
             "dispatch alone": (lookup, lambda: torch.ops.tilekit_bench.alloc_only(a, b))}
    best = dict.fromkeys(cases, float("inf"))
    with use_backend("triton"):
        torch.ops.tilekit.matmul(a, b)  # compile once (8x8: runs in no time)
        _stub_launches(matmul_kernel)
        try:
            for _ in range(repeats):
                for name, (provider, call) in cases.items():
                    dispatch.set_config_provider(provider)
                    call()
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        call()
                    best[name] = min(best[name], (time.perf_counter() - t0) / calls * 1e6)
        finally:
            dispatch.set_config_provider(lookup)
    return best


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
    # variants compiled after _stub_launches (an exact launcher may compile one for its layout) launch the
    # no-op too; everything stubbed is restored at the end, since the CI smoke test runs this inside pytest
    from tilekit.backends.triton import CompiledTriton
    jit_fn = CompiledTriton.__dict__["jit_fn"]
    CompiledTriton.jit_fn = _NoLaunch()
    try:
        return _run(args)
    finally:
        CompiledTriton.jit_fn = jit_fn
        while _STUBBED:
            ck, jit = _STUBBED.pop()
            ck._jit = jit


def _run(args):
    A = torch.randn(512, 384, dtype=torch.float16)
    B = torch.randn(384, 256, dtype=torch.float16)
    C = torch.empty(512, 256, dtype=torch.float16)
    X = torch.randn(64, 1000)
    Y = torch.empty_like(X)
    mm_grid = lambda meta: (tk.cdiv(512, meta["BM"]), tk.cdiv(256, meta["BN"]))
    mm_meta = {"BM": 128, "BN": 64}
    views = [(A[:512 - i, :384 - i], B[:384 - i, :256 - i], C[:512 - i, :256 - i]) for i in range(6)]
    cases = [
        ("matmul, positional args", warm_launch(tk_matmul, (A, B, C), mm_grid), floor((A, B, C), mm_grid, mm_meta), 1, ""),
        ("matmul, constexpr kwargs", warm_launch(tk_matmul, (A, B, C), mm_grid, BM=128, BN=64),
         floor((A, B, C), mm_grid, mm_meta), 1, ""),
        ("softmax, tuple grid", warm_launch(tk_softmax, (X, Y), (64,)), floor((X, Y), (64,), {}), 1, ""),
        ("matmul, 6 layouts in turn", rotating_launch(Kernel(tk_matmul.fn), views, mm_grid),
         floor(views[-1], mm_grid, mm_meta, times=6), 6, "(each finds its exact launcher)"),
    ]
    def row(name, call, base, per, how):
        (best, median), (fl, _) = _paired_us(call, base, max(args.calls // per, 1))
        return name, (best / per, median / per), (fl / per, None), how

    rows = [row(*case) for case in cases]
    limit, _ExactLaunchers.LIMIT = _ExactLaunchers.LIMIT, 0  # no exact launchers: every call builds a key
    try:
        rows.append(row("matmul, the key path", warm_launch(Kernel(tk_matmul.fn), (A, B, C), mm_grid),
                        floor((A, B, C), mm_grid, mm_meta), 1, "(a call whose layout has no exact launcher)"))
    finally:
        _ExactLaunchers.LIMIT = limit
    print(f"Warm launch overhead (final Triton launch replaced by a no-op), against the floor measured beside it; "
          f"target <= {TARGET_RATIO}x")
    print(f"  {'':<28} {'best':>7}  {'median':>7}  {'floor':>7}  {'ratio':>6}  (us/call, best of 7 repeats "
          f"alternating with the floor's; median shows the noise)")
    for name, (best, median), (fl, _), how in rows:
        ratio = best / fl
        print(f"  {name:<28} {best:7.2f}  {median:7.2f}  {fl:7.2f}  {ratio:6.2f}  "
              f"{'ok' if ratio <= TARGET_RATIO else 'OVER TARGET'} {how}")
    op = op_level_us(args.calls // 4 or 1)
    print("Op level: torch.ops.tilekit.matmul, 8x8 fp32, launch stubbed (best us/call, alternating runs)")
    print(f"  no table entry {op['no table entry']:7.2f}; a table entry {op['a table entry']:7.2f} (the lookup's "
          f"cost: {op['a table entry'] - op['no table entry']:+.2f}, target <= 1 us); custom-op dispatch alone "
          f"{op['dispatch alone']:7.2f}; tilekit::matmul / dispatch {op['no table entry'] / op['dispatch alone']:5.2f}")
    print("Cold trace-to-source (fresh kernel -> Triton source)")
    print(f"  matmul                       {cold_source_ms(tk_matmul.fn, (A, B, C)):7.2f} ms")
    print(f"  softmax                      {cold_source_ms(tk_softmax.fn, (X, Y)):7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
