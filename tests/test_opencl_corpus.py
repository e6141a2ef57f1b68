"""The whole property corpus (tests/corpus.py) on the OpenCL backend, executed by PoCL on the CPU.

The C path (one emitter for CUDA, HIP and OpenCL) is *executed* here: real work-groups, ``__local``
memory and barriers. Same Hypothesis draws, edge shapes and tolerances as tests/test_properties.py, bf16
included (the reference executor and OpenCL compute it; only Triton's interpreter does not). Then the
cross-backend check: reference, Triton interpreter and OpenCL on the same random inputs.
"""
import copy

import pytest
import torch

import corpus
from test_properties import _make_property_test, check
from tilekit import tolerances
from tilekit.backends import get_backend

_ok, _why = get_backend("opencl").available()
pytestmark = [
    pytest.mark.skipif(not _ok, reason=f"OpenCL backend unavailable: {_why}"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]

# Each new specialization is one PoCL build (about a second); these bounds keep the file near two minutes
# on two cores while every case, dtype and edge shape still runs.
EXAMPLES = 4


for _case in corpus.CASES:
    _name = f"test_opencl_{_case.name}"
    globals()[_name] = _make_property_test(_case, backends=("opencl",), max_examples=EXAMPLES, name=_name)
del _case, _name


@pytest.mark.parametrize("wdtype", corpus.PACKED_DTYPES, ids=lambda d: d.name)
def test_opencl_dequant_every_packed_dtype(wdtype):
    case = corpus.CASES_BY_NAME["dequant_groups"]
    # 37 columns: 3/5/6/7-bit codes straddle 32-bit words, and the last scale group is partial
    got, want, args = corpus.run_case(case, "opencl", (19, 37), torch.float32, {"BN": 16, "BK": 32}, 7, wdtype)
    assert args["Wvals"].unique().numel() > 1
    check(case, got, want, torch.float32)


def _agreement_params():
    return [pytest.param(c, dt, id=f"{c.name}-{str(dt).replace('torch.', '')}") for c in corpus.CASES for dt in c.dtypes]


@pytest.mark.parametrize("case,dtype", _agreement_params())
def test_reference_triton_opencl_agree(case, dtype):
    """Same random inputs through every backend that computes this dtype; each agrees with the reference
    executor within the dtype's tolerance (Triton's interpreter is left out for bf16, which it computes
    wrongly)."""
    shape = tuple(max(lo, (lo + hi) // 2) | 1 for lo, hi in case.dims)
    config = case.configs_for(shape)[-1]
    rng = torch.Generator().manual_seed(4321)
    args = case.make_inputs(rng, shape, dtype, case.variants[-1])
    backends = ["reference", "opencl"] + ([] if dtype == torch.bfloat16 else ["triton"])
    outs = {b: case.launch(copy.deepcopy(args), b, config) for b in backends}
    ref = outs["reference"]
    for r in ref:
        assert not torch.isnan(r.double()).any(), f"{case.name}: the reference left elements unwritten"
        assert r.double().abs().sum() > 0, f"{case.name}: an all-zero output proves nothing"
    bound = case.error_bound(args, dtype) if case.error_bound is not None else None
    for b in backends[1:]:
        for r, o in zip(ref, outs[b]):
            want = r.to(torch.float64) if r.is_floating_point() else r.to(torch.int64)
            tolerances.assert_close(o, want, dtype, msg=f"{case.name}: {b} disagrees with the reference executor",
                                    extra_atol=None if bound is None else 2 * bound)  # both sides round
