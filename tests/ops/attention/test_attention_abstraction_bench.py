"""bench/abstraction/attention.py's hand-written Triton dK/dV computes what tilekit's dK/dV kernel computes
(both on the Triton interpreter at a tiny ragged GQA causal shape), so its compile-time ratios compare like
with like. GPU timing is not run here: no GPU (the bench says so)."""
import importlib.util
import os

import pytest

pytest.importorskip("triton")
BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "..", "bench", "abstraction", "attention.py")


def test_hand_written_dkdv_matches_tilekit_on_the_interpreter():
    spec = importlib.util.spec_from_file_location("attention_abstraction_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    same, vs64 = bench.check_dkdv_on_interpreter()
    assert same <= 1e-5, same     # same math, same order: equal up to fp32 rounding
    assert vs64 <= 1e-3, vs64     # and both right (float64 autograd)
