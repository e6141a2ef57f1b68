"""bench/abstraction/moe.py's CPU parts: the hand-written Triton gate-up kernel and tilekit's compute the same
intermediate under Triton's interpreter, and the padding table matches the alignment's arithmetic."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture(scope="module")
def bench_moe():
    spec = importlib.util.spec_from_file_location("bench_abstraction_moe", os.path.join(ROOT, "bench", "abstraction",
                                                                                        "moe.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hand_and_tilekit_gate_up_agree_under_the_interpreter(bench_moe):
    from tilekit.backends.triton import interpreter_unavailable_reason
    why = interpreter_unavailable_reason()
    if why:
        pytest.skip(why)
    assert bench_moe.interpreter_match() == 0.0


def test_padding_table(bench_moe):
    rows = bench_moe.padding_rows(models=(("E=4 top-1", 4, 1),), token_counts=(1, 64), block_ms=(16, 64))
    by_key = {(t, routing): ratios for _, t, routing, ratios in rows}
    assert by_key[(1, "balanced")] == {16: 16.0, 64: 64.0}  # one slot, one padded block
    for ratios in by_key.values():
        assert all(r >= 1.0 for r in ratios.values()) and ratios[64] >= ratios[16]
