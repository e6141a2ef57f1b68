"""Property tests: every corpus kernel agrees with an independent reference on every backend.

Each case of ``tests/corpus.py`` gets one Hypothesis test, parametrized over (backend, dtype). Shapes
are drawn ragged (random sizes that are not powers of two), tile configs and variants are drawn too, and
``@example`` pins the edge shapes: 1x1, just above a tile, and empty dims (a grid of 0 programs, or
loops of 0 iterations). Tolerances come from ``tilekit.tolerances`` only.

bf16 runs on the reference executor only: Triton's interpreter computes bf16 wrongly (it does integer
arithmetic on the raw bits). A new backend is one more entry in ``BACKENDS``.
"""
import copy

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import corpus
import tilekit as tk
from conftest import cpu_backends
from tilekit import tolerances

pytestmark = [
    # softmax's fully masked tail rows compute -inf - -inf under the interpreter; those rows are never stored
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]

BACKENDS = cpu_backends(cstyle=False)  # reference and triton, from the backend registry (conftest.py)
backend_runs = corpus.supports


def _ragged(lo, hi):
    """Sizes in [lo, hi] that are not powers of two above 1 (those come from the @examples)."""
    return st.integers(lo, hi).filter(lambda n: n <= 1 or n & (n - 1) != 0)


def check(case, got, want, dtype, args=None):
    assert len(got) == len(want) and got, case.name
    extra = case.error_bound(args, dtype) if case.error_bound is not None and args is not None else None
    for g, w in zip(got, want):
        assert g.shape == w.shape, (case.name, g.shape, w.shape)
        tolerances.assert_close(g, w, dtype, msg=f"{case.name}: kernel output differs from the reference",
                                extra_atol=extra)


def _make_property_test(case, backends=BACKENDS, max_examples=None, name=None):
    """One Hypothesis test of ``case`` over (backend, dtype); other backends' test files reuse it."""
    pairs = [pytest.param(b, dt, id=f"{b}-{str(dt).replace('torch.', '')}")
             for b in backends for dt in case.dtypes if backend_runs(b, dt)]

    @pytest.mark.parametrize("backend,dtype", pairs)
    @given(shape=st.tuples(*(_ragged(lo, hi) for lo, hi in case.dims)),
           config_index=st.integers(0, len(case.configs) - 1),
           variant=st.sampled_from(case.variants),
           seed=st.integers(0, 2**31 - 1))
    def test(backend, dtype, shape, config_index, variant, seed):
        configs = case.configs_for(shape)
        assert configs, f"{case.name}: no config fits {shape}; the corpus dims and configs disagree"
        config = configs[config_index % len(configs)]
        got, want, args = corpus.run_case(case, backend, shape, dtype, config, seed, variant)
        check(case, got, want, dtype, args)

    for shape in case.edge_shapes:
        test = example(shape=shape, config_index=0, variant=case.variants[0], seed=1)(test)
    if max_examples is not None:
        test = settings(max_examples=max_examples)(test)
    test.__name__ = name or f"test_{case.name}_matches_reference"
    return test


for _case in corpus.CASES:
    globals()[f"test_{_case.name}_matches_reference"] = _make_property_test(_case)
del _case


# ---- every packed dtype through the dequant kernel, on every backend --------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("wdtype", corpus.PACKED_DTYPES, ids=lambda d: d.name)
def test_dequant_every_packed_dtype(backend, wdtype):
    case = corpus.CASES_BY_NAME["dequant_groups"]
    # 37 columns: codes straddle 32-bit words for 3/5/6/7-bit types, the last group is partial
    got, want, args = corpus.run_case(case, backend, (19, 37), torch.float32, {"BN": 16, "BK": 32}, 7, wdtype)
    assert args["Wvals"].unique().numel() > 1
    check(case, got, want, torch.float32)


# ---- cross-backend agreement: same inputs, reference executor vs Triton interpreter ------------------

def _agreement_params():
    out = []
    for case in corpus.CASES:
        for dt in case.dtypes:
            if all(backend_runs(b, dt) for b in BACKENDS):
                out.append(pytest.param(case, dt, id=f"{case.name}-{str(dt).replace('torch.', '')}"))
    return out


@pytest.mark.parametrize("case,dtype", _agreement_params())
def test_backends_agree(case, dtype):
    # a ragged shape in the middle of the case's range, odd in every dim
    shape = tuple(max(lo, (lo + hi) // 2) | 1 for lo, hi in case.dims)
    config = case.configs_for(shape)[-1]
    rng = torch.Generator().manual_seed(1234)
    args = case.make_inputs(rng, shape, dtype, case.variants[-1])
    outs = {}
    for backend in BACKENDS:
        mine = copy.deepcopy(args)
        outs[backend] = case.launch(mine, backend, config)
    ref, other = outs[BACKENDS[0]], outs[BACKENDS[1]]
    bound = case.error_bound(args, dtype) if case.error_bound is not None else None
    for r, o in zip(ref, other):
        assert not torch.isnan(r.double()).any(), f"{case.name}: reference left elements unwritten"
        tolerances.assert_close(o, r.to(torch.float64) if r.is_floating_point() else r.to(torch.int64), dtype,
                                msg=f"{case.name}: {BACKENDS[1]} disagrees with {BACKENDS[0]}",
                                extra_atol=None if bound is None else 2 * bound)  # both sides round


# ---- packed tensors: a window at any offset reads exactly the unpacked values ---------------------------------

@tk.kernel
def packed_window(P, Y, r, c, BM: tk.constexpr = 8, BN: tk.constexpr = 64):
    tk.store(Y, (0, 0), tk.load(P, (r, c), (BM, BN)).to(tk.float32))


@pytest.mark.parametrize("backend", BACKENDS)
@given(wdtype=st.sampled_from(corpus.PACKED_DTYPES), m=st.integers(1, 12), n=st.integers(1, 90),
       r=st.integers(-10, 14), c=st.integers(-70, 95), seed=st.integers(0, 2**31 - 1))
@example(wdtype=tk.int3, m=3, n=33, r=0, c=1, seed=0)        # every code shifted across word boundaries
@example(wdtype=tk.float6_e2m3, m=2, n=70, r=1, c=-5, seed=0)  # negative column offset, partial rows
def test_packed_window_loads(backend, wdtype, m, n, r, c, seed):
    vals = corpus.representable(wdtype)
    g = torch.Generator().manual_seed(seed)
    v = vals[torch.randint(0, vals.numel(), (m, n), generator=g)]
    canvas = torch.zeros(10 + 14 + 8, 70 + 95 + 64, dtype=torch.float64)  # room for any drawn window
    canvas[10:10 + m, 70:70 + n] = v
    want = canvas[10 + r:18 + r, 70 + c:134 + c]
    Y = torch.full((8, 64), float("nan"))
    packed_window[(1,)](tk.pack(v, wdtype), Y, r, c, backend=backend)
    assert torch.equal(Y.double(), want)


# ---- many atomic adds into one element: the error bound grows with the count, and still catches a lost add ----

@pytest.mark.parametrize("backend", BACKENDS)
def test_scatter_many_duplicates_fp16(backend):
    """60 source rows into one destination row in fp16: every backend exceeds the few-roundings tolerance
    (so the per-element sequential-rounding bound is needed), and dropping any one add still fails."""
    case = corpus.CASES_BY_NAME["scatter_add_rows"]
    shape = (60, 1, 86)
    got, want, args = corpus.run_case(case, backend, shape, torch.float16, case.configs_for(shape)[0], 1523743)
    check(case, got, want, torch.float16, args)
    lost = got[0].clone()
    lost[0] -= args["X"][7]  # as if source row 7 had never been added
    with pytest.raises(AssertionError):
        check(case, [lost], want, torch.float16, args)
