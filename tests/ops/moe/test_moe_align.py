"""moe_align against a plain-Python implementation of DESIGN.md's stable semantics."""
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings, strategies as st

import tilekit.ops as ops

SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def align_by_hand(ids, num_experts, block_m):
    """Plain Python: slots grouped by ascending expert, original order kept, each group padded."""
    flat = [int(v) for v in ids.reshape(-1).tolist()]
    sentinel = len(flat)
    length = len(flat) + num_experts * (block_m - 1)
    sorted_ids, expert_ids = [], []
    for e in range(num_experts):
        slots = [i for i, v in enumerate(flat) if v == e]
        if not slots:
            continue
        padded = -(-len(slots) // block_m) * block_m
        sorted_ids += slots + [sentinel] * (padded - len(slots))
        expert_ids += [e] * (padded // block_m)
    num_padded = len(sorted_ids)
    sorted_ids += [sentinel] * (length - num_padded)
    expert_ids += [-1] * (-(-length // block_m) - len(expert_ids))
    return sorted_ids, expert_ids, num_padded


@st.composite
def routings(draw):
    num_experts = draw(st.integers(1, 70))
    tokens = draw(st.integers(0, 40))
    top_k = draw(st.integers(1, min(8, num_experts)))
    kind = draw(st.sampled_from(["random", "balanced", "empty_experts", "single"]))
    n = tokens * top_k
    if kind == "random":
        flat = draw(st.lists(st.integers(0, num_experts - 1), min_size=n, max_size=n))
    elif kind == "balanced":
        flat = [i % num_experts for i in range(n)]
    elif kind == "empty_experts":
        used = draw(st.lists(st.integers(0, num_experts - 1), min_size=1, max_size=3))
        flat = [used[i % len(used)] for i in range(n)]
    else:
        flat = [draw(st.integers(0, num_experts - 1))] * n
    ids = torch.tensor(flat, dtype=draw(st.sampled_from([torch.int32, torch.int64]))).reshape(tokens, top_k)
    return ids, num_experts, draw(st.sampled_from([16, 32, 64]))


def _check(case, backend):
    ids, num_experts, block_m = case
    with ops.use_backend(backend):
        sorted_ids, expert_ids, num_padded = ops.moe_align(ids, num_experts, block_m)
    want_sorted, want_experts, want_padded = align_by_hand(ids, num_experts, block_m)
    assert sorted_ids.dtype == expert_ids.dtype == num_padded.dtype == torch.int32
    assert sorted_ids.tolist() == want_sorted
    assert expert_ids.tolist() == want_experts
    assert num_padded.tolist() == [want_padded]


@settings(max_examples=40, **SETTINGS)
@given(routings())
@example((torch.zeros(0, 2, dtype=torch.int32), 8, 16))
def test_align_reference(case):
    _check(case, "reference")


def test_align_triton():
    ids = torch.tensor([[3, 1], [1, 1], [0, 3], [3, 3], [1, 0]], dtype=torch.int64)
    _check((ids, 5, 16), "triton")


@pytest.mark.parametrize("block_m", [32])
def test_align_many_programs_on_opencl_exactly(block_m, monkeypatch):
    """>= 4 programs per kernel on PoCL with several threads: positions come from the scan, not atomics."""
    monkeypatch.setenv("POCL_MAX_PTHREAD_COUNT", "4")
    gen = torch.Generator().manual_seed(block_m)
    ids = torch.randint(0, 60, (300, 4), generator=gen, dtype=torch.int32)
    ids[:100] = 7  # an imbalanced expert beside random ones
    with ops.use_backend("opencl"):
        got = ops.moe_align(ids, 60, block_m)
    want = align_by_hand(ids, 60, block_m)
    assert got[0].tolist() == want[0] and got[1].tolist() == want[1] and got[2].tolist() == [want[2]]
    # the slot blocks of the default config: 1200 slots at BS <= 64 is well over 4 programs
    assert ids.numel() // 64 >= 4


def test_align_matches_the_ops_reference():
    ids = torch.randint(0, 9, (33, 3), generator=torch.Generator().manual_seed(3))
    got = ops.moe_align(ids, 9, 16)
    want = ops.moe_align_reference(ids, 9, 16)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_align_rejects_bad_arguments():
    with pytest.raises(TypeError, match="ids"):
        ops.moe_align(torch.zeros(3, 2), 4, 16)
    with pytest.raises(ValueError, match="ids"):
        ops.moe_align(torch.full((3, 2), 4), 4, 16)
    with pytest.raises(ValueError, match="block_m"):
        ops.moe_align(torch.zeros(3, 2, dtype=torch.int32), 4, 0)


def test_align_opcheck_and_compile():
    ids = torch.randint(0, 8, (10, 2), dtype=torch.int32)
    torch.library.opcheck(torch.ops.tilekit.moe_align.default, (ids, 8, 16),
                          test_utils=("test_schema", "test_faketensor"))
    compiled = torch.compile(lambda t: ops.moe_align(t, 8, 16), fullgraph=True)
    assert all(torch.equal(a, b) for a, b in zip(compiled(ids), ops.moe_align(ids, 8, 16)))
