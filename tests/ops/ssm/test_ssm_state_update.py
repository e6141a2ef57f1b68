"""tilekit.ops.selective_state_update (Mamba-1 decode step): applied step by step it equals
tilekit.ops.selective_scan over the same sequence, with and without state_batch_indices (continuous batching,
negative entries skipped). The scan itself is checked against float64 in test_ssm_selective_scan.py."""
import pytest
import torch
from torch.library import opcheck

import tilekit.ops as tk_ops
from tilekit.ops import use_backend
from tilekit.tolerances import assert_close, op_table

from conftest import cpu_backends

FORWARD = op_table("ssm", "FORWARD")
BACKENDS = [b for b in cpu_backends() if b in ("reference", "opencl")]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def problem(bt, dm, length, n, groups, dtype, seed):
    gen = torch.Generator().manual_seed(seed)

    def rand(*s, to=dtype):
        return torch.randn(*s, generator=gen, dtype=torch.float64).to(to)

    return dict(u=rand(bt, dm, length), delta=(torch.rand(bt, dm, length, generator=gen) * 0.8 - 0.4).to(dtype),
                A=-(torch.rand(dm, n, generator=gen) * 2 + 0.2), B=rand(bt, groups, n, length),
                C=rand(bt, groups, n, length), D=rand(dm, to=torch.float32), z=rand(bt, dm, length),
                delta_bias=rand(dm, to=torch.float32) * 0.3, initial_state=rand(bt, dm, n, to=torch.float32))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_steps_equal_the_scan(backend, dtype):
    bt, dm, length, n, groups = 3, 6, 9, 7, 3
    p = problem(bt, dm, length, n, groups, dtype, 5)
    with use_backend(backend):
        want, want_last = tk_ops.selective_scan(**p, delta_softplus=True, return_last_state=True)
        state = p["initial_state"].clone()
        outs = []
        for t in range(length):
            outs.append(tk_ops.selective_state_update(
                state, p["u"][:, :, t], p["delta"][:, :, t], p["A"], p["B"][..., t], p["C"][..., t], D=p["D"],
                z=p["z"][:, :, t], dt_bias=p["delta_bias"], dt_softplus=True))
    assert_close(torch.stack(outs, -1), want.float(), dtype=dtype, table=FORWARD)
    assert_close(state, want_last, dtype=dtype, table=FORWARD)


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_batch_indices_pick_cache_rows_and_skip_padding(backend):
    bt, dm, length, n = 3, 4, 5, 5
    p = problem(bt, dm, length, n, 1, torch.float32, 6)
    B, C = p["B"][:, 0], p["C"][:, 0]  # (Bt, N, L)
    slots = torch.tensor([4, -1, 1], dtype=torch.int32)  # row 1 is a padding slot
    cache = torch.randn(6, dm, n, generator=torch.Generator().manual_seed(7))
    cache[slots[0]], cache[slots[2]] = p["initial_state"][0], p["initial_state"][2]
    untouched = cache.clone()
    with use_backend(backend):
        want, want_last = tk_ops.selective_scan(p["u"], p["delta"], p["A"], B, C, D=p["D"],
                                                initial_state=p["initial_state"], return_last_state=True)
        outs = [tk_ops.selective_state_update(cache, p["u"][:, :, t], p["delta"][:, :, t], p["A"], B[..., t],
                                              C[..., t], D=p["D"], state_batch_indices=slots)
                for t in range(length)]
    got = torch.stack(outs, -1)
    for row, slot in ((0, 4), (2, 1)):
        assert_close(got[row], want[row], dtype=torch.float32, table=FORWARD)
        assert_close(cache[slot], want_last[row], dtype=torch.float32, table=FORWARD)
    assert not got[1].any()
    for slot in (0, 2, 3, 5):
        assert torch.equal(cache[slot], untouched[slot])


def test_opcheck_and_checks():
    p = problem(2, 4, 1, 3, 2, torch.float32, 8)
    args = (p["initial_state"].clone(), p["u"][..., 0], p["delta"][..., 0], p["A"], p["B"][..., 0], p["C"][..., 0],
            p["D"], p["z"][..., 0], p["delta_bias"], True, None)
    with use_backend("reference"):
        opcheck(torch.ops.tilekit.selective_state_update.default, args)
    with pytest.raises(ValueError, match="'state'"):
        tk_ops.selective_state_update(torch.zeros(3, 4, 3), *args[1:6])
    with pytest.raises(TypeError, match="state_batch_indices"):
        tk_ops.selective_state_update(*args[:6], state_batch_indices=torch.zeros(2, dtype=torch.int64))


# ---- ssd_state_update (Mamba-2 decode step) ------------------------------------------------------

def ssd_problem(bt, length, heads, hdim, groups, n, dtype, seed, d_per_p=True):
    gen = torch.Generator().manual_seed(seed)

    def rand(*s, to=dtype):
        return torch.randn(*s, generator=gen, dtype=torch.float64).to(to)

    return dict(x=rand(bt, length, heads, hdim), dt=(torch.rand(bt, length, heads, generator=gen) - 1.5).to(dtype),
                A=-(torch.rand(heads, generator=gen) * 2 + 0.3), B=rand(bt, length, groups, n),
                C=rand(bt, length, groups, n), D=rand(heads, hdim, to=torch.float32) if d_per_p else
                rand(heads, to=torch.float32), z=rand(bt, length, heads, hdim),
                dt_bias=rand(heads, to=torch.float32) * 0.3, initial_states=rand(bt, heads, hdim, n, to=torch.float32))


def ssd_steps(p, cache, slots=None):
    return torch.stack([tk_ops.ssd_state_update(cache, p["x"][:, t], p["dt"][:, t], p["A"], p["B"][:, t],
                                                p["C"][:, t], D=p["D"], z=p["z"][:, t], dt_bias=p["dt_bias"],
                                                dt_softplus=True, state_batch_indices=slots)
                        for t in range(p["x"].shape[1])], 1)


# fp16 on the reference only: on PoCL each new specialization costs seconds to build (CI budget); the fp32 one
# shares its ssd_scan build with test_ssm_ssd.py's OpenCL test
@pytest.mark.parametrize("backend,dtype,d_per_p", [(b, torch.float32, True) for b in BACKENDS] +
                         [("reference", torch.float16, False)])
def test_ssd_steps_equal_the_ssd_scan(backend, dtype, d_per_p):
    p = ssd_problem(2, 7, 4, 5, 2, 6, dtype, 9, d_per_p)
    with use_backend(backend):
        want, want_final = tk_ops.ssd_scan(p["x"], p["dt"], p["A"], p["B"], p["C"], 16, D=p["D"], z=p["z"],
                                           dt_bias=p["dt_bias"], initial_states=p["initial_states"],
                                           dt_softplus=True, return_final_states=True)
        state = p["initial_states"].clone()
        got = ssd_steps(p, state)
    assert got.dtype == dtype and got.shape == p["x"].shape
    assert_close(got, want, dtype=dtype, table=FORWARD)
    assert_close(state, want_final, dtype=dtype, table=FORWARD)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ssd_state_batch_indices_pick_cache_rows_and_skip_padding(backend):
    p = ssd_problem(3, 4, 2, 3, 1, 5, torch.float32, 10)
    slots = torch.tensor([3, -1, 0], dtype=torch.int32)  # row 1 is a padding slot
    cache = torch.randn(5, 2, 3, 5, generator=torch.Generator().manual_seed(11))
    cache[3], cache[0] = p["initial_states"][0], p["initial_states"][2]
    untouched = cache.clone()
    with use_backend(backend):
        want, want_final = tk_ops.ssd_scan(p["x"], p["dt"], p["A"], p["B"], p["C"], 16, D=p["D"], z=p["z"],
                                           dt_bias=p["dt_bias"], initial_states=p["initial_states"],
                                           dt_softplus=True, return_final_states=True)
        got = ssd_steps(p, cache, slots)
    for row, slot in ((0, 3), (2, 0)):
        assert_close(got[row], want[row], dtype=torch.float32, table=FORWARD)
        assert_close(cache[slot], want_final[row], dtype=torch.float32, table=FORWARD)
    assert not got[1].any()
    for slot in (1, 2, 4):
        assert torch.equal(cache[slot], untouched[slot])


def test_ssd_state_update_opcheck_and_checks():
    p = ssd_problem(2, 1, 2, 3, 1, 4, torch.float32, 12)
    args = (p["initial_states"].clone(), p["x"][:, 0], p["dt"][:, 0], p["A"], p["B"][:, 0], p["C"][:, 0], p["D"],
            p["z"][:, 0], p["dt_bias"], True, None)
    with use_backend("reference"):
        opcheck(torch.ops.tilekit.ssd_state_update.default, args)
        empty = tk_ops.ssd_state_update(torch.zeros(0, 2, 3, 4), *[a[:0] if a.dim() > 1 and a.shape[0] == 2 else a
                                                                   for a in args[1:6]])
    assert empty.shape == (0, 2, 3)
    assert torch.ops.tilekit.ssd_state_update.default._schema.arguments[0].alias_info.is_write
    with pytest.raises(ValueError, match="'state'"):
        tk_ops.ssd_state_update(torch.zeros(2, 2, 3, 5), *args[1:6])
    with pytest.raises(ValueError, match="'B'"):
        tk_ops.ssd_state_update(args[0], args[1], args[2], args[3], torch.zeros(2, 3, 4), args[5])
    with pytest.raises(TypeError, match="state_batch_indices"):
        tk_ops.ssd_state_update(*args[:6], state_batch_indices=torch.zeros(2, dtype=torch.int64))


def test_ssd_state_update_under_torch_compile_mutates_the_cache():
    p = ssd_problem(2, 2, 2, 3, 1, 4, torch.float32, 13)
    slots = torch.tensor([1, -1], dtype=torch.int32)

    def decode(cache, t):
        return tk_ops.ssd_state_update(cache, p["x"][:, t], p["dt"][:, t], p["A"], p["B"][:, t], p["C"][:, t],
                                       D=p["D"], z=p["z"][:, t], dt_bias=p["dt_bias"], dt_softplus=True,
                                       state_batch_indices=slots) * 2

    torch._dynamo.reset()
    compiled = torch.compile(decode, fullgraph=True, backend="aot_eager")
    cache = torch.randn(3, 2, 3, 4, generator=torch.Generator().manual_seed(14))
    before = cache.clone()
    eager_cache = cache.clone()
    with use_backend("reference"):
        got = [compiled(cache, t) for t in range(2)]
        want = [decode(eager_cache, t) for t in range(2)]
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    assert torch.equal(cache, eager_cache)  # the compiled graph wrote the cache in place, as eager did
    assert not torch.equal(cache[1], before[1]) and torch.equal(cache[0], before[0]) and torch.equal(cache[2], before[2])
