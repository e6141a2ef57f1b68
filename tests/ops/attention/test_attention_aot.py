"""The attention kernels compile ahead of time for GPU targets at their default configs (Llama-3-8B GQA
shapes), use the matrix instructions, and do not spill on NVIDIA. Each (kernel, target) compiles once.
The full table (every kernel x sm_80/sm_90/gfx90a/gfx942 x D=64/128) is in docs/ops/attention.md; CI
compiles a subset to stay within its time budget."""
import functools
import warnings

import pytest
import torch

from tilekit.ops.attention.op import kernel_example

warnings.filterwarnings("ignore", message=".*no dispatch table.*")
MATRIX_INSTRUCTION = {"sm_80": "mma.sync", "sm_90": "wgmma", "gfx90a": "mfma", "gfx942": "mfma"}


@functools.lru_cache(maxsize=None)
def artifact(target, kernel, D):
    tk_kernel, args, kwargs = kernel_example((1, 32, 8, 4096, 4096, D), torch.float16, "cuda", kernel)
    return tk_kernel.compile(target, *args, **kwargs)


CASES = [("sm_90", "fwd", 128), ("sm_90", "dkdv", 128), ("sm_90", "dq", 128), ("sm_80", "fwd", 64),
         ("gfx942", "fwd", 64)]


@pytest.mark.parametrize("target, kernel, D", CASES)
def test_compiles_with_matrix_instructions(target, kernel, D):
    art = artifact(target, kernel, D)
    assert art.instructions[MATRIX_INSTRUCTION[target]] > 0, art.report()
    if target == "sm_90":
        assert art.instructions["mma.sync"] == 0, art.report()


@pytest.mark.parametrize("target, kernel, D", [c for c in CASES if c[0].startswith("sm_")])
def test_no_spills_on_nvidia(target, kernel, D):
    art = artifact(target, kernel, D)
    assert art.resources["spills"] == 0, art.report()
    assert 0 < art.resources["registers"] <= 255, art.report()
