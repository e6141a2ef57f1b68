"""Comparison, scoring, poisoning and timing pieces of tilekit bench, unit by unit."""
import subprocess
import sys
import textwrap

import pytest
import torch

from tilekit.bench.compare import compare_trial, compare_trials
from tilekit.bench.runner import summarise
from tilekit.bench.timing import CUDA_MIN_RUNS, BadSamples, CudaTimer, l2_flush_bytes, time_cpu
from tilekit.bench.timing import summarise as summarise_timing
from tilekit.tolerances import KERNELBENCH


# ---- comparison ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_tolerance_comes_from_kernelbench_table(dtype):
    atol, rtol = KERNELBENCH[dtype]
    ref = torch.ones(4, 5, dtype=dtype)
    inside = ref.clone()
    inside[0, 0] = 1 + (atol + rtol) * 0.5
    outside = ref.clone()
    outside[0, 0] = 1 + (atol + rtol) * 4
    assert compare_trial([ref], [inside])["passed"]
    report = compare_trial([ref], [outside])
    assert not report["passed"] and report["mismatched"] == 1 and (report["atol"], report["rtol"]) == (atol, rtol)


def test_nan_anywhere_fails_even_where_reference_is_nan():
    ref = torch.tensor([1.0, float("nan")])
    assert "NaN" in compare_trial([ref], [torch.tensor([1.0, float("nan")])])["reason"]
    assert not compare_trial([torch.zeros(3)], [torch.tensor([0.0, float("nan"), 0.0])])["passed"]


def test_structure_mismatches_fail_with_reasons():
    ref = [torch.zeros(2, 3)]
    assert "shape (3, 2)" in compare_trial(ref, [torch.zeros(3, 2)])["reason"]
    assert "dtype torch.float64" in compare_trial(ref, [torch.zeros(2, 3, dtype=torch.float64)])["reason"]
    assert "2 output(s)" in compare_trial(ref, [torch.zeros(2, 3), torch.zeros(1)])["reason"]
    assert compare_trial([torch.arange(4)], [torch.arange(4)])["passed"]            # integers: exact
    assert not compare_trial([torch.arange(4)], [torch.arange(4) + 1])["passed"]
    passed, reports, reason = compare_trials([ref, ref], [ref, [torch.ones(2, 3)]])
    assert not passed and reports[0]["passed"] and reason.startswith("trial 1:")


def test_comparison_in_chunks_counts_every_mismatch(monkeypatch):
    import tilekit.bench.compare as compare
    monkeypatch.setattr(compare, "COMPARE_CHUNK", 7)
    ref = torch.zeros(5, 11)
    out = ref.clone()
    out[0, 0], out[2, 3], out[4, 10] = 1.0, -3.0, 0.5                 # in the first, a middle and the last chunk
    report = compare.compare_trial([ref], [out])
    assert report["mismatched"] == 3 and report["max_abs_diff"] == 3.0
    inf_ref = torch.tensor([float("inf"), 1.0])
    assert compare.compare_trial([inf_ref], [inf_ref.clone()])["passed"]
    assert not compare.compare_trial([inf_ref], [torch.tensor([1.0, 1.0])])["passed"]


def _row(status, speedup=None, speedup_compile=None, suspicious=False):
    return {"id": status, "status": status, "correct": status == "correct", "speedup_eager": speedup,
            "speedup_compile": speedup_compile, "suspicious": suspicious}


def test_fast_p_counts_correct_and_faster_over_scored_problems():
    results = [_row("correct", 0.5, 0.4), _row("correct", 1.2, 0.9), _row("correct", 3.0, 1.6),
               _row("incorrect", 5.0), _row("crash"), _row("no_candidate"), _row("reference_error")]
    summary = summarise(results)
    assert summary["scored"] == 5
    assert summary["fast_p"] == {"0": 3 / 5, "1": 2 / 5, "1.5": 1 / 5, "2": 1 / 5}
    assert summary["fast_p_compile"] == {"0": 3 / 5, "1": 1 / 5, "1.5": 1 / 5, "2": 0.0}
    assert summary["status_counts"]["no_candidate"] == 1
    assert summarise(results, compile_baseline=False)["fast_p_compile"] is None
    assert summarise([_row("no_candidate")])["fast_p"]["1"] is None


# ---- poisoning -------------------------------------------------------------------------------
def test_poison_fills_python_allocations():
    # In a subprocess: installing the poison patches torch for the whole process.
    code = textwrap.dedent("""
        import math, torch
        from tilekit.bench import poison
        poison.install()
        poison.install()                                    # idempotent
        assert poison.is_installed()
        assert torch.isnan(torch.empty(3, 4)).all()
        assert torch.isnan(torch.empty_like(torch.zeros(5, dtype=torch.float16))).all()
        assert torch.isnan(torch.empty_strided((2, 2), (1, 2))).all()
        assert torch.isnan(torch.zeros(2).new_empty(7)).all()
        assert (torch.empty(4, dtype=torch.int32) == 2**31 - 1).all()
        assert torch.empty(2, device="meta").device.type == "meta"
        p = torch.empty(3, requires_grad=True)               # parameters are initialised later
        assert p.requires_grad and torch.isnan(p).all()
        lin = torch.nn.Linear(3, 2)                          # init overwrites the poison
        assert torch.isfinite(lin.weight).all()
        assert poison.dirty_cuda_allocator("cpu", 1024) == 0
        print("ok")
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# ---- timing ----------------------------------------------------------------------------------
class FakeClock:
    """perf_counter stand-in: every call to fn advances time by the next programmed duration."""

    def __init__(self, durations):
        self.now = 0.0
        self.durations = list(durations)

    def __call__(self):
        return self.now

    def work(self):
        self.now += self.durations.pop(0)


def test_cpu_timing_takes_median_and_respects_budget():
    clock = FakeClock([0.0] + [0.001, 0.003, 0.002, 0.100, 0.002])           # warm-up, then 5 runs
    prepared, kept = [], []
    samples = time_cpu(clock.work, runs=5, warmup=1, budget_s=10.0, clock=clock,
                       prepare=prepared.append, after=lambda i, out: kept.append(i))
    assert prepared == [0, 1, 2, 3, 4, 5] and kept == [0, 1, 2, 3, 4]       # before every call, after every run
    timing = summarise_timing(samples.as_dict())                                     # computed by the parent
    assert timing["clock"] == "cpu-wall" and timing["runs"] == 5
    assert timing["median_ms"] == pytest.approx(2.0) and timing["max_ms"] == pytest.approx(100.0)
    assert timing["q1_ms"] == pytest.approx(2.0) and timing["q3_ms"] == pytest.approx(3.0)
    # A slow function stops at the budget, but never below min_runs.
    clock = FakeClock([0.0] + [1.0] * 50)
    assert len(time_cpu(clock.work, runs=50, min_runs=3, warmup=1, budget_s=0.5, clock=clock).times_ms) == 3


def test_parent_rejects_samples_no_clock_produces():
    for bad in ({"samples_ms": []}, {"samples_ms": [1.0, -2.0]}, {"samples_ms": [float("nan")]},
                {"samples_ms": ["1"]}, {}, None):
        with pytest.raises(BadSamples):
            summarise_timing(bad)


def test_l2_flush_size_exceeds_l2():
    class Props:
        L2_cache_size = 50 * 2**20
    assert l2_flush_bytes(Props()) == 100 * 2**20
    assert l2_flush_bytes(object()) >= 64 * 2**20                    # unknown L2: a safe default


class FakeCuda:
    """Just enough of torch for CudaTimer: events report programmed elapsed times, and every
    call (kernel launch, flush, record) is logged so the protocol's order can be checked."""

    uint8 = "uint8"

    def __init__(self, elapsed):
        self.log, self.elapsed = [], list(elapsed)
        fake = self

        class Event:
            def __init__(self, enable_timing=False):
                assert enable_timing

            def record(self):
                fake.log.append("record")

            def elapsed_time(self, other):
                return fake.elapsed.pop(0)

        class Props:
            L2_cache_size = 40 * 2**20

        class Cuda:
            @staticmethod
            def get_device_properties(device):
                return Props()

            @staticmethod
            def synchronize(device=None):
                fake.log.append("sync")

        Cuda.Event = Event
        self.cuda = Cuda

    def empty(self, nbytes, dtype, device):
        fake = self

        class Buffer:
            def fill_(self, value):
                fake.log.append("flush")
        assert nbytes == 80 * 2**20
        return Buffer()


def test_cuda_timer_protocol_with_stand_ins():
    runs = CUDA_MIN_RUNS
    fake = FakeCuda(elapsed=[1.0] + [float(i % 7 + 1) for i in range(runs)])
    timer = CudaTimer(device="cuda:0", torch_module=fake)
    calls = []
    prepared = []
    samples = timer.time(lambda: (calls.append(1), fake.log.append("kernel")), runs=10, warmup_ms=5.0,
                         prepare=lambda i: (prepared.append(i), fake.log.append("refill")))
    timing = summarise_timing(samples.as_dict())
    assert timing["runs"] == runs, "at least 100 timed runs whatever is asked"
    assert timing["clock"] == "cuda-events" and timing["flush_bytes"] == 80 * 2**20
    assert timing["median_ms"] == pytest.approx(4.0)
    assert prepared == list(range(len(calls)))                 # fresh inputs before every call
    # The timed section: flush, then record/kernel/record, for every run; the flush is outside.
    timed = fake.log[fake.log.index("flush") - 1:]
    assert timed[:5] == ["refill", "flush", "record", "kernel", "record"]       # the refill is outside too
    assert timed.count("flush") == runs and timed[-1] == "sync"
    # 1 first call + 1 probe + max(3, 5 ms / 1 ms) warm-up calls + 100 timed runs.
    assert len(calls) == 1 + 1 + 5 + runs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: CUDA-event timing with an L2 flush "
                                                          "cannot run on this machine")
def test_cuda_timer_on_a_real_gpu():
    a = torch.randn(1024, 1024, device="cuda")
    timing = summarise_timing(CudaTimer().time(lambda: a @ a).as_dict())
    assert timing["runs"] >= 100 and timing["median_ms"] > 0
