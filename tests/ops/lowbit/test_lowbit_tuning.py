"""lowbit_linear's tuning declarations: a split-K GEMV trial runs as the op runs it (the before/after launch hooks
zero the fp32 accumulator and run the finish kernel), so it passes the tuner's correctness gate and is timed."""
import dataclasses

import pytest
import torch

from tilekit.autotune import protocol
from tilekit.autotune.protocol import kernels
from tilekit.autotune.worker import run_request

SHAPE, FLAGS = (3, 40, 64), {"fmt": "int3", "group": "32"}


def _request(kernel_id, config, tmp_path, **extra):
    return {"kernel": kernel_id, "shape": list(SHAPE), "flags": FLAGS, "dtype": "float32", "backend": "reference",
            "device": "cpu", "seed": 2, "timing_lock": str(tmp_path / "lock"), "config": config, "warmup": 1,
            "repeats": 2, **extra}


@pytest.mark.parametrize("split", [1, 4])
def test_split_k_gemv_trial_passes_the_gate_and_is_timed(split, tmp_path):
    gemv = kernels()["lowbit_linear.gemv"]
    config = {**gemv.default_config_for(SHAPE, FLAGS, torch.float32, torch.device("cpu")), "SPLIT_K": split, "BK": 16}
    answer = run_request(_request(gemv.id, config, tmp_path))
    assert answer["status"] == "ok", answer
    assert answer["time_s"] > 0 and len(answer["times"]) >= 2


def test_without_the_finish_step_a_split_k_trial_fails_the_gate(tmp_path):
    """The hooks are what makes split-K right: without after_launch the output stays NaN."""
    gemv = kernels()["lowbit_linear.gemv"]
    unfinished = dataclasses.replace(gemv, id="lowbit_linear.gemv_unfinished_for_test", after_launch=None)
    protocol.register(unfinished)
    try:
        config = {**gemv.default_config_for(SHAPE, FLAGS, torch.float32, torch.device("cpu")), "SPLIT_K": 4, "BK": 16}
        assert run_request(_request(unfinished.id, config, tmp_path, gate_only=True))["status"] == "wrong"
        config["SPLIT_K"] = 1
        assert run_request(_request(unfinished.id, config, tmp_path, gate_only=True))["status"] == "ok"
    finally:
        protocol._REGISTRY.pop(unfinished.id, None)


def test_default_configs_know_the_target():
    """AMD takes BK = 32 for widths whose codes cross words (0 spills on gfx90a/gfx942; see test_lowbit_aot)."""
    from tilekit.ops.lowbit import op
    gpu = torch.device("cuda")
    for fmt, amd_bk in (("int3", 32), ("uint5", 32), ("int4", 128)):
        assert op.gemv_default_config((1, 4096, 4096), torch.float16, gpu, 128, fmt=fmt, arch="gfx942")["BK"] == amd_bk
        assert op.gemv_default_config((1, 4096, 4096), torch.float16, gpu, 128, fmt=fmt, arch="sm_90")["BK"] == 128
    amd = op.gemm_default_config((512, 4096, 4096), torch.float16, gpu, 128, fmt="int7", arch="gfx90a")
    assert (amd["BN"], amd["BK"]) == (32, 32)
    nv = op.gemm_default_config((512, 4096, 4096), torch.float16, gpu, 128, fmt="int7", arch="sm_80")
    assert (nv["BN"], nv["BK"]) == (64, 64)
    assert op.device_arch(torch.device("cpu")) is None
