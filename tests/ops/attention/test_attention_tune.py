"""The paged decode and the split combine are tunable kernels (attention.decode, attention.combine): their
trials gate against a float64 reference for every split count, a real (tiny) tuning run writes a table entry,
and attention_decode then launches the tuned split count."""
import warnings

import pytest
import torch

import tilekit.ops as tk_ops
from tilekit.autotune import lookup, table
from tilekit.autotune.protocol import kernels
from tilekit.autotune.tuner import TuneJob, tune
from tilekit.autotune.worker import run_request
from tilekit.ops.attention import decode

warnings.filterwarnings("ignore", message=".*no dispatch table.*")
SMALL = (2, 4, 2, 1, 112, 16)  # B, Hq, Hkv, Sq, Skv, D: 7 pages of 16; the second sequence is shorter


def _gate(kernel_id, config, tmp_path, flags=None, dtype="float32"):
    req = {"kernel": kernel_id, "shape": list(SMALL), "flags": flags or {}, "dtype": dtype, "backend": "reference",
           "device": "cpu", "seed": 1, "gate_only": True, "timing_lock": str(tmp_path / "lock"), "config": config}
    return run_request(req)


@pytest.mark.parametrize("splits", [1, 2, 4, 8])
def test_decode_trials_gate_for_every_split_count(splits, tmp_path):
    answer = _gate("attention.decode", {"num_splits": splits, "num_warps": 4, "num_stages": 1}, tmp_path)
    assert answer["status"] == "ok", answer
    windowed = _gate("attention.decode", {"num_splits": splits, "num_warps": 4, "num_stages": 1}, tmp_path,
                     flags={"window": "20:0"})
    assert windowed["status"] == "ok", windowed


def test_decode_reference_depends_on_the_split_count():
    k = kernels()["attention.decode"]
    inputs = k.inputs_for(SMALL, {}, torch.float32, torch.Generator().manual_seed(0))
    inputs[-1].fill_(1)
    one = k.reference_for(inputs, {})
    inputs[-1].fill_(4)
    four = k.reference_for(inputs, {})
    assert (one - four).abs().max() > 1e-2 and torch.all(one[:, :, 1:] == 0)


def test_combine_gates_and_default_shapes_are_llama_decode(tmp_path):
    assert _gate("attention.combine", {"num_warps": 2}, tmp_path, dtype="float16")["status"] == "ok"
    for kid in ("attention.decode", "attention.combine"):
        assert (16, 32, 8, 1, 4096, 128) in kernels()[kid].default_shapes["gpu"]


@pytest.mark.usefixtures("fresh_tuning_cache")
def test_a_tiny_decode_tuning_run_is_launched_by_the_op(monkeypatch):
    job = TuneJob(kernels()["attention.decode"], SMALL, backend="reference", trials=3, sampler="grid",
                  space={"num_splits": [1, 2, 4], "num_warps": [4], "num_stages": [1]}, trial_timeout=60,
                  repeats=2, warmup=1, final_repeats=2)
    result = tune(job, progress=False)
    assert result.config["num_splits"] in (1, 2, 4) and result.timed >= 3
    [(_, data)] = table.all_tables()
    [entry] = data["entries"]
    assert entry["kernel"] == "attention.decode" and entry["config"] == result.config
    seen = []
    real = decode.decode_launch_args
    monkeypatch.setattr(decode, "decode_launch_args", lambda *a: (seen.append(a[5].shape[2]), real(*a))[1])
    inputs = kernels()["attention.decode"].inputs_for(SMALL, {}, torch.float32, torch.Generator().manual_seed(2))
    with tk_ops.use_backend("reference"):
        decode.attention_decode(*inputs[:5])
    assert seen == [result.config["num_splits"]]
    assert lookup.provider("attention.decode", SMALL, torch.float32, torch.device("cpu"), "reference") == result.config
