"""Ahead-of-time compiles of lowbit_linear for sm_80, sm_90, gfx90a and gfx942 (no GPU needed): W4 and W3 GEMV
at M = 1 and GEMM at M = 512, 4096 x 4096, group 128, at the op's GPU default configs. Each (kernel, target)
compiles once per session."""
import functools

import pytest
import torch

pytest.importorskip("triton")

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
    # W3's GEMV window (12 words per row) loads as 8 + 4-word pieces: at BN = 32 over 4 warps that is a 64-bit and
    # a 32-bit load per thread, exactly the words needed (a 128-bit load of 16 words would waste a quarter)
    widest = 64 if (fmt, m) == ("int3", 1) else 128
    assert art.instructions["widest_global_load_bits"] == widest, art.report()
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
