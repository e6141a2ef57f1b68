"""Ahead-of-time compiles of lowbit_linear for sm_80, sm_90, gfx90a and gfx942 (no GPU needed): W4 and W3 GEMV
at M = 1 and GEMM at M = 512, 4096 x 4096, group 128, at the op's GPU default configs, and the sm_90 GEMV's bytes
per weight at every width. Each (kernel, target) compiles once per session."""
import functools

import pytest
import torch

pytest.importorskip("triton")

from tilekit.artifact import ptx_global_loads  # noqa: E402
from tilekit.ops.lowbit import op  # noqa: E402

NVIDIA, AMD = ["sm_80", "sm_90"], ["gfx90a", "gfx942"]
MATRIX = {"sm_80": "mma.sync", "sm_90": "wgmma", "gfx90a": "mfma", "gfx942": "mfma"}
CASES = [("int4", 1), ("int3", 1), ("int4", 512), ("int3", 512)]
AMD_CASES = CASES + [("int5", 1), ("int7", 512), ("fp8_e4m3", 512)]   # the other formats with AMD-specific tiles


@functools.lru_cache(maxsize=None)
def artifact(target, fmt, m):
    kernel, args, kwargs = op.kernel_example((m, 4096, 4096), torch.float16, torch.device("cuda"), fmt=fmt,
                                             group_size=128, target=target)
    return kernel.compile(target, *args, **kwargs)


@pytest.mark.parametrize("fmt,m", CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("target", NVIDIA)
def test_nvidia_no_spills_128_bit_weight_loads_and_mma(target, fmt, m):
    art = artifact(target, fmt, m)
    assert art.resources["spills"] == 0, art.report()
    # W3's GEMV window (12 words per row) loads as 8 + 4-word pieces: at its BN = 64 over 4 warps that is a 128-bit
    # and a 64-bit load per thread, exactly the words needed (16-word loads would waste a quarter)
    assert art.instructions["widest_global_load_bits"] == 128, art.report()
    if m > op.GEMV_MAX_M:
        assert art.instructions[MATRIX[target]] > 0, art.report()


@pytest.mark.parametrize("fmt,m", AMD_CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("target", AMD)
def test_amd_no_spills_and_mfma_on_the_gemm(target, fmt, m):
    """int3's AMD defaults take BK = 32 (op._straddling_on_amd): at the NVIDIA tiles its decode spilled 171-225
    SGPRs."""
    art = artifact(target, fmt, m)
    assert art.binary[:4] == b"\x7fELF", art.report()
    if m > op.GEMV_MAX_M:
        assert art.instructions["mfma"] > 0, art.report()
    assert art.resources["spills"] == 0, art.report()


@pytest.mark.parametrize("bits", range(1, 9))
def test_gemv_bytes_per_weight_within_1_1_of_ideal(bits):
    """Issue 11's static count on sm_90: every ld.global of the GEMV (its K loop is its only loop) times the 128
    threads, over the weights of one iteration, less x's share (BM * BK fp16 values), against bits / 8 plus one
    fp16 scale per group of 128. A tile of fewer rows than threads repeats each scale (op._gemv_bn)."""
    fmt = "int1" if bits == 1 else f"int{bits}"
    _, _, kwargs = op.kernel_example((1, 4096, 4096), torch.float16, torch.device("cuda"), fmt=fmt,
                                     group_size=128, target="sm_90")
    art = artifact("sm_90", fmt, 1)
    loaded = sum(v * b // 8 for v, b in ptx_global_loads(art.asm["ptx"])) * 32 * kwargs["num_warps"]
    per_weight = (loaded - kwargs["BM"] * kwargs["BK"] * 2) / (kwargs["BN"] * kwargs["BK"])
    assert per_weight <= 1.1 * (bits / 8 + 2 / 128), (kwargs, per_weight)
