"""Timing: CUDA events with an L2 flush on a GPU, wall clock on the CPU. Both report the median.

GPU protocol (KernelBench-like, with the flush that it lacks): one call to load/compile, warm-up
calls for ``warmup_ms`` (at least ``min_warmup`` calls), then ``runs`` (default and minimum 100)
timed calls. Before every timed call a buffer larger than the L2 cache is overwritten, so each
call starts from a cold L2, as it would inside a real model. Each call is bracketed by its own
pair of CUDA events; the flush sits outside the bracket.

CPU protocol: warm-up calls, then wall-clock (``time.perf_counter``) repeats until ``runs`` or the
time budget is used up (at least ``min_runs``). The result is labelled ``cpu-wall``.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable

CUDA_MIN_RUNS = 100
DEFAULT_L2_BYTES = 50 * 2**20            # H100's L2, when the driver does not report one
MIN_FLUSH_BYTES = 64 * 2**20


@dataclasses.dataclass
class Timing:
    median_ms: float
    runs: int
    clock: str                      # "cuda-events" or "cpu-wall"
    min_ms: float
    max_ms: float
    mean_ms: float
    flush_bytes: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _summarise(times_ms: list[float], clock: str, flush_bytes: int = 0) -> Timing:
    return Timing(median_ms=statistics.median(times_ms), runs=len(times_ms), clock=clock,
                  min_ms=min(times_ms), max_ms=max(times_ms), mean_ms=statistics.fmean(times_ms),
                  flush_bytes=flush_bytes)


def time_cpu(fn: Callable[[], object], *, runs: int = 20, min_runs: int = 3, warmup: int = 1,
             budget_s: float = 1.0, clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Median wall-clock milliseconds of ``fn()``; stops at ``runs`` or when ``budget_s`` is spent."""
    if runs < 1 or min_runs < 1:
        raise ValueError("runs and min_runs must be at least 1")
    for _ in range(warmup):
        fn()
    times: list[float] = []
    deadline = clock() + budget_s
    while len(times) < runs and (len(times) < min_runs or clock() < deadline):
        start = clock()
        fn()
        times.append((clock() - start) * 1e3)
    return _summarise(times, "cpu-wall")


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
             min_warmup: int = 3) -> Timing:
        runs = max(runs, CUDA_MIN_RUNS)
        fn()                                    # first call: lazy compilation, allocator growth
        self.synchronize()
        # Warm up for ~warmup_ms, measured with an event pair around one call.
        start, end = self.new_event(), self.new_event()
        start.record()
        fn()
        end.record()
        self.synchronize()
        one_call_ms = max(start.elapsed_time(end), 1e-3)
        for _ in range(max(min_warmup, int(warmup_ms / one_call_ms))):
            fn()
        starts = [self.new_event() for _ in range(runs)]
        ends = [self.new_event() for _ in range(runs)]
        for i in range(runs):
            self.flush_l2()                     # outside the timed bracket
            starts[i].record()
            fn()
            ends[i].record()
        self.synchronize()
        return _summarise([s.elapsed_time(e) for s, e in zip(starts, ends)], "cuda-events", self.flush_bytes)


def time_callable(fn: Callable[[], object], device: str, *, cuda_runs: int = CUDA_MIN_RUNS,
                  cpu_runs: int = 20, cpu_budget_s: float = 1.0) -> Timing:
    if device.startswith("cuda"):
        return CudaTimer(device=device).time(fn, runs=cuda_runs)
    return time_cpu(fn, runs=cpu_runs, budget_s=cpu_budget_s)
