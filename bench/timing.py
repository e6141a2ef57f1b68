"""Timing: CUDA events with an L2 flush on a GPU, wall clock on the CPU. Both report the median.

GPU protocol (KernelBench-like, with the flush that it lacks): one call to load/compile, warm-up
calls for ``warmup_ms`` (at least ``min_warmup`` calls), then ``runs`` (default and minimum 100)
timed calls. Before every timed call a buffer larger than the L2 cache is overwritten, so each
call starts from a cold L2, as it would inside a real model. Each call is bracketed by its own
pair of CUDA events; the flush sits outside the bracket.

CPU protocol: warm-up calls, then wall-clock (``time.perf_counter``) repeats until ``runs`` or the
time budget is used up (at least ``min_runs``). The result is labelled ``cpu-wall``.

Both take an optional ``prepare(call_index)`` hook, run before every call *outside* the timed bracket
(the worker refills the inputs there with fresh random data), and ``after(run_index, output)``, run
after every timed call, also outside the bracket (the worker keeps one randomly chosen output there).

The timers return raw samples (``Samples``); the statistics (``summarise``) are computed by the
parent process, so a candidate that patches ``statistics`` or ``Timing`` in its own process changes
nothing. The clock is bound when this module is imported, before any candidate code runs.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
import time
from typing import Callable

CUDA_MIN_RUNS = 100
DEFAULT_L2_BYTES = 50 * 2**20            # H100's L2, when the driver does not report one
MIN_FLUSH_BYTES = 64 * 2**20


@dataclasses.dataclass
class Samples:
    """Raw timings, as the worker reports them."""
    times_ms: list[float]
    clock: str                      # "cuda-events" or "cpu-wall"
    flush_bytes: int = 0

    def as_dict(self) -> dict:
        return {"samples_ms": list(self.times_ms), "clock": self.clock, "flush_bytes": self.flush_bytes}


class BadSamples(ValueError):
    """Timings that no honest clock produces (none, negative, not finite)."""


def summarise(samples: dict) -> dict:
    """Statistics of a worker's raw samples (``Samples.as_dict()``), computed in the parent:
    median, quartiles, min, max, mean. Raises BadSamples naming what is wrong."""
    times = samples.get("samples_ms") if isinstance(samples, dict) else None
    if not isinstance(times, list) or not times:
        raise BadSamples("no timing samples")
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t >= 0
               for t in times):
        raise BadSamples("timing samples that are negative, not finite or not numbers")
    ordered = sorted(float(t) for t in times)
    q1, q3 = (statistics.quantiles(ordered, n=4, method="inclusive")[::2] if len(ordered) > 1
              else (ordered[0], ordered[0]))
    return {"median_ms": statistics.median(ordered), "q1_ms": q1, "q3_ms": q3, "min_ms": ordered[0],
            "max_ms": ordered[-1], "mean_ms": statistics.fmean(ordered), "runs": len(ordered),
            "clock": str(samples.get("clock")), "flush_bytes": int(samples.get("flush_bytes") or 0),
            "samples_ms": [float(t) for t in times]}


def _no_prepare(call_index: int) -> None:
    return None


def _no_after(run_index: int, output) -> None:
    return None


def time_cpu(fn: Callable[[], object], *, runs: int = 20, min_runs: int = 3, warmup: int = 1,
             budget_s: float = 1.0, clock: Callable[[], float] = time.perf_counter,
             prepare: Callable[[int], None] = _no_prepare, after: Callable[[int, object], None] = _no_after
             ) -> Samples:
    """Wall-clock milliseconds of ``fn()``; stops at ``runs`` or when ``budget_s`` is spent."""
    if runs < 1 or min_runs < 1:
        raise ValueError("runs and min_runs must be at least 1")
    calls = 0
    for _ in range(warmup):
        prepare(calls)
        calls += 1
        fn()
    times: list[float] = []
    deadline = clock() + budget_s
    while len(times) < runs and (len(times) < min_runs or clock() < deadline):
        prepare(calls)
        calls += 1
        start = clock()
        out = fn()
        times.append((clock() - start) * 1e3)
        after(len(times) - 1, out)
    return Samples(times, "cpu-wall")


def l2_flush_bytes(device_properties) -> int:
    """Bytes to overwrite so nothing of a previous run stays in L2: twice the L2, at least 64 MiB."""
    l2 = int(getattr(device_properties, "L2_cache_size", 0) or 0) or DEFAULT_L2_BYTES
    return max(2 * l2, MIN_FLUSH_BYTES)


class CudaTimer:
    """The GPU path. The torch-facing pieces are attributes so the protocol can be unit-tested on a
    CPU machine with stand-ins (tests/test_bench_timing.py)."""

    def __init__(self, device=None, torch_module=None):
        if torch_module is None:
            import torch as torch_module
        self.torch = torch_module
        self.device = device if device is not None else torch_module.device("cuda")
        props = torch_module.cuda.get_device_properties(self.device)
        self.flush_bytes = l2_flush_bytes(props)
        self.flush_buffer = torch_module.empty(self.flush_bytes, dtype=torch_module.uint8, device=self.device)

    def flush_l2(self) -> None:
        self.flush_buffer.fill_(0x5A)

    def new_event(self):
        return self.torch.cuda.Event(enable_timing=True)

    def synchronize(self) -> None:
        self.torch.cuda.synchronize(self.device)

    def time(self, fn: Callable[[], object], *, runs: int = CUDA_MIN_RUNS, warmup_ms: float = 25.0,
             min_warmup: int = 3, prepare: Callable[[int], None] = _no_prepare,
             after: Callable[[int, object], None] = _no_after) -> Samples:
        runs = max(runs, CUDA_MIN_RUNS)
        calls = 0

        def call():
            nonlocal calls
            prepare(calls)
            calls += 1
            return fn()
        call()                                  # first call: lazy compilation, allocator growth
        self.synchronize()
        # Warm up for ~warmup_ms, measured with an event pair around one call.
        prepare(calls)
        calls += 1
        start, end = self.new_event(), self.new_event()
        start.record()
        fn()
        end.record()
        self.synchronize()
        one_call_ms = max(start.elapsed_time(end), 1e-3)
        for _ in range(max(min_warmup, int(warmup_ms / one_call_ms))):
            call()
        starts = [self.new_event() for _ in range(runs)]
        ends = [self.new_event() for _ in range(runs)]
        for i in range(runs):
            prepare(calls)                      # outside the timed bracket, like the flush
            calls += 1
            self.flush_l2()
            starts[i].record()
            out = fn()
            ends[i].record()
            after(i, out)                       # queued after the end event: not timed
        self.synchronize()
        return Samples([s.elapsed_time(e) for s, e in zip(starts, ends)], "cuda-events", self.flush_bytes)


def time_callable(fn: Callable[[], object], device: str, *, cuda_runs: int = CUDA_MIN_RUNS,
                  cpu_runs: int = 20, cpu_budget_s: float = 1.0, prepare: Callable[[int], None] = _no_prepare,
                  after: Callable[[int, object], None] = _no_after) -> Samples:
    if device.startswith("cuda"):
        return CudaTimer(device=device).time(fn, runs=cuda_runs, prepare=prepare, after=after)
    return time_cpu(fn, runs=cpu_runs, budget_s=cpu_budget_s, prepare=prepare, after=after)
