"""The SSM kernels compiled ahead of time for real GPUs (no GPU needed), with the GPU default configs:
selective_scan's forward and both backward kernels at Mamba-2.8B prefill (Bt=1, Dm=5120, L=2048, N=16, fp16): no
spills, registers within the limit, and no matrix instructions (the scan has no matmul); ssd_scan's forward at
Mamba-2-2.7B prefill (Bt=1, L=2048, H=80, P=64, N=128, chunk 256, fp16): no spills and tensor-core / matrix-core
instructions (wgmma on sm_90, mma.sync on sm_80, mfma on gfx90a/gfx942); the SSD backward's kernels the same at sm_90
and gfx942. One compile per (kernel, target)."""
import functools

import pytest
import torch

from tilekit.ops.ssm import op, ssd

TARGETS = ["sm_80", "sm_90", "gfx90a", "gfx942"]
MAMBA_2_8B = (1, 5120, 2048, 16)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@functools.lru_cache(maxsize=None)
def artifact(kernel, target):
    if kernel == "fwd":
        k, args, kwargs = op.kernel_example(MAMBA_2_8B, torch.float16, torch.device("cuda"))
    else:
        k, args, kwargs = op.backward_kernel_example(MAMBA_2_8B, torch.float16, torch.device("cuda"),
                                                     kernel=kernel.removeprefix("bwd_"))
    return k.compile(target, *args, **kwargs)


# the backward is two kernels (adjoint pass, then per-chunk gradients); as one kernel it held 19 tensor arguments'
# pointers, shapes and strides and spilled 32 / 34 SGPRs on gfx90a / gfx942
CASES = [(kernel, t) for kernel in ("fwd", "bwd_adjoint", "bwd_chunk") for t in TARGETS]


@pytest.mark.parametrize("kernel,target", CASES)
def test_selective_scan_compiles_without_spills(kernel, target):
    art = artifact(kernel, target)
    res = art.resources
    assert res["spills"] == 0, art.report()
    registers = res["registers"] if target.startswith("sm_") else res["vgprs"]
    assert 0 < registers <= (255 if target.startswith("sm_") else 512), art.report()
    assert isinstance(art.binary, bytes) and len(art.binary) > 1000
    # the state stays in registers: no matrix unit, and the scan lowers to shuffles / LDS, not to global memory
    assert art.instructions.get("wgmma", 0) == 0 and art.instructions.get("mma.sync", 0) == 0


MAMBA_2_2_7B = (1, 2048, 80, 64, 128, 256)
MATRIX_INSTRUCTION = {"sm_90": "wgmma", "sm_80": "mma.sync", "gfx90a": "mfma", "gfx942": "mfma"}


@functools.lru_cache(maxsize=None)
def ssd_artifact(target):
    k, args, kwargs = ssd.kernel_example(MAMBA_2_2_7B, torch.float16, torch.device("cuda"), target=target)
    return k.compile(target, *args, **kwargs)


@pytest.mark.parametrize("target", TARGETS)
def test_ssd_forward_at_chunk_256_uses_matrix_units_without_spills(target):
    art = ssd_artifact(target)
    res = art.resources
    assert res["spills"] == 0, art.report()
    registers = res["registers"] if target.startswith("sm_") else res["vgprs"]
    assert 0 < registers <= (255 if target.startswith("sm_") else 512), art.report()
    assert art.instructions.get(MATRIX_INSTRUCTION[target], 0) > 0, art.report()


# The SSD backward's five kernels at the same shape. CI compiles them for sm_90 and gfx942 (one compile per
# (kernel, target), about 20 s cold in all); sm_80 and gfx90a are in the README table
# (`bench/abstraction/ssm.py --aot-table` style numbers from the same helper).
BACKWARD_TARGETS = ["sm_90", "gfx942"]
# the gate and dt kernels are elementwise / per-head vectors: no matmul
BACKWARD_MATMULS = {"gate": False, "dstate": True, "dx": True, "dc": True, "dt": False}


@functools.lru_cache(maxsize=None)
def ssd_backward_artifact(kernel, target):
    k, args, kwargs = ssd.kernel_example(MAMBA_2_2_7B, torch.float16, torch.device("cuda"), backward=True,
                                         target=target, kernel=kernel)
    return k.compile(target, *args, **kwargs)


@pytest.mark.parametrize("target", BACKWARD_TARGETS)
@pytest.mark.parametrize("kernel", ssd.BACKWARD_KERNELS)
def test_ssd_backward_at_chunk_256_compiles_without_spills(kernel, target):
    art = ssd_backward_artifact(kernel, target)
    res = art.resources
    assert res["spills"] == 0, art.report()
    registers = res["registers"] if target.startswith("sm_") else res["vgprs"]
    assert 0 < registers <= (255 if target.startswith("sm_") else 512), art.report()
    matrix = art.instructions.get(MATRIX_INSTRUCTION[target], 0) + art.instructions.get("mma.sync", 0)
    assert (matrix > 0) == BACKWARD_MATMULS[kernel], art.report()
