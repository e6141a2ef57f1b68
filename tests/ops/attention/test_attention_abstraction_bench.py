"""bench/abstraction/attention.py's hand-written Triton dK/dV computes what tilekit's dK/dV kernel computes
(both on the Triton interpreter at a tiny ragged GQA causal shape), so its compile-time ratios compare like
with like. GPU timing is not run here: no GPU (the bench says so)."""
import importlib.util
import os

import pytest

pytest.importorskip("triton")
BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "..", "bench", "abstraction", "attention.py")


def _load_bench():
    spec = importlib.util.spec_from_file_location("attention_abstraction_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_hand_written_dkdv_matches_tilekit_on_the_interpreter():
    bench = _load_bench()
    same, vs64 = bench.check_dkdv_on_interpreter()
    assert same <= 1e-5, same     # same math, same order: equal up to fp32 rounding
    assert vs64 <= 1e-3, vs64     # and both right (float64 autograd)


@pytest.mark.parametrize("kernel", ["fwd", "dkdv"])
def test_hand_kernels_get_tilekits_specialization(kernel):
    """The like-with-like compile: each hand integer argument is marked divisible by 16 exactly when tilekit's
    AOT compile marks the shape or stride it carries (tilekit.kernel's own rule on the same example tensors),
    and the innermost strides are the constant 1 in both."""
    import torch
    from tilekit.kernel import _divisible_by_16
    from tilekit.ops.attention.op import kernel_example
    bench = _load_bench()
    _, args, _ = kernel_example((1, 32, 8, 4096, 4096, 128), torch.float16, "cuda", kernel, target="sm_90")
    tensors = dict(zip(bench.TILEKIT_PARAMS[kernel], args))
    sig, consts, attrs = bench.hand_signature(kernel, tensors)
    names = bench.HAND[kernel][0].arg_names
    marked = {names[i] for (i,) in attrs} - set(bench.HAND[kernel][1])
    tilekit_marked = _divisible_by_16(tensors)
    carried = bench.HAND_INT_ARGS[kernel]
    assert marked == {n for n, dim in carried.items() if dim in tilekit_marked and n not in consts}
    assert {n for n in consts if n not in ("BM", "BN", "BD")} == {"q_s3", "k_s3"}
    assert {"Sq", "Skv", "D", "Hq", "q_s1", "l_s0"} <= marked and not {"B", "Hkv"} & marked  # B = 1, Hkv = 8
