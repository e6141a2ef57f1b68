"""The varlen kernels tune and look up under their own ids (attention.varlen_fwd, attention.varlen_bwd_dkdv,
attention.varlen_bwd_dq; SPEC B sequences, Hq, Hkv, max_seqlen_q, max_seqlen_k, D): their trials gate on ragged
packed inputs against each sequence run alone, a real (tiny) tuning run writes a varlen entry, and
attention_varlen then launches that config, while the dense kernel's entry is not taken for varlen."""
import dataclasses
import warnings

import pytest
import torch

import tilekit.ops as tk_ops
from tilekit.autotune import lookup, table
from tilekit.autotune.protocol import kernels
from tilekit.autotune.tuner import TuneJob, tune
from tilekit.autotune.worker import run_request
from tilekit.ops.attention import op

warnings.filterwarnings("ignore", message=".*no dispatch table.*")
SMALL = (3, 4, 2, 40, 40, 16)  # 3 ragged sequences of at most 40 tokens, GQA 4/2, D=16
CONFIG = {"BM": 16, "BN": 16, "num_warps": 4, "num_stages": 1}


@pytest.mark.parametrize("kernel_id", sorted(op.VARLEN_KERNEL_IDS.values()))
def test_varlen_trials_gate_on_ragged_inputs(kernel_id, tmp_path):
    for flags in ({}, {"causal": "1"}):
        req = {"kernel": kernel_id, "shape": list(SMALL), "flags": flags, "dtype": "float32", "backend": "reference",
               "device": "cpu", "seed": 1, "gate_only": True, "timing_lock": str(tmp_path / "lock"), "config": CONFIG}
        answer = run_request(req)
        assert answer["status"] == "ok", (flags, answer)


def test_varlen_inputs_are_ragged_and_the_gate_catches_a_wrong_kernel():
    k = kernels()["attention.varlen_fwd"]
    q, _, _, cu_q, cu_k, maxima = k.inputs_for(SMALL, {}, torch.float32, torch.Generator().manual_seed(0))
    lens = (cu_q[1:] - cu_q[:-1]).tolist()
    assert lens[0] == 40 and len(set(lens)) > 1 and q.shape[0] == sum(lens) and tuple(maxima.shape[:2]) == (40, 40)
    # the reference is per sequence: treating the packed rows as one sequence gives something else
    whole = op.attention_reference(q.double().permute(1, 0, 2)[None], *(t.double().permute(1, 0, 2)[None]
                                   for t in k.inputs_for(SMALL, {}, torch.float32, torch.Generator().manual_seed(0))[1:3]))
    assert (k.reference_for((q, *k.inputs_for(SMALL, {}, torch.float32, torch.Generator().manual_seed(0))[1:]), {})
            - whole[0].permute(1, 0, 2)).abs().max() > 1e-2


@pytest.mark.usefixtures("fresh_tuning_cache")
def test_a_tiny_varlen_tuning_run_is_launched_by_the_op(monkeypatch):
    # trial 0 at BM=16 instead of the op's CPU default (BM=64), so whichever wins differs from what the op
    # would launch untuned
    tuned_kernel = dataclasses.replace(kernels()["attention.varlen_fwd"],
                                       default_config=lambda shape, dtype, device, *, flags: dict(CONFIG))
    job = TuneJob(tuned_kernel, SMALL, backend="reference", trials=2, sampler="grid",
                  space={"BM": [32], "BN": [16], "num_warps": [4], "num_stages": [1]}, trial_timeout=60,
                  repeats=2, warmup=1, final_repeats=2)
    result = tune(job, progress=False)
    assert result.config["BM"] in (16, 32) and result.timed >= 2
    assert op._default_config(SMALL, torch.float32, torch.device("cpu"), "fwd", varlen=True)["BM"] == 64
    [(_, data)] = table.all_tables()
    [entry] = data["entries"]
    assert entry["kernel"] == "attention.varlen_fwd" and entry["config"] == result.config
    seen = []
    real = op.varlen_fwd_launch_args
    monkeypatch.setattr(op, "varlen_fwd_launch_args", lambda *a: (seen.append(dict(a[8])), real(*a))[1])
    q, k, v, cu_q, cu_k, maxima = kernels()["attention.varlen_fwd"].inputs_for(SMALL, {}, torch.float32,
                                                                                torch.Generator().manual_seed(2))
    with tk_ops.use_backend("reference"):
        op.attention_varlen(q, k, v, cu_q, cu_k, 40, 40)
    assert [{key: c[key] for key in result.config} for c in seen] == [result.config]
    assert lookup.provider("attention.varlen_fwd", SMALL, torch.float32, torch.device("cpu"), "reference") == \
        result.config
    # the dense forward has no entry: a dense call at the same sizes does not take the varlen one
    assert lookup.provider("attention.fwd", SMALL, torch.float32, torch.device("cpu"), "reference") is None
