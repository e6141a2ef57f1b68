"""The attention kernels compile ahead of time for GPU targets at their per-architecture default configs
(Llama-3-8B GQA shapes, the target's own defaults through kernel_example(target=...)), use the matrix
instructions, and do not spill: 0 spills on every target, and on NVIDIA also an empty stack frame (ptxas
puts register spills there, and the report's `spills` reads only LOCAL: test_attention_dsl_needs.py).
Each (kernel, target, D) compiles once. The full table (every kernel x sm_80/sm_90/gfx90a/gfx942 x
D=64/128, dense and varlen, plus D=96/256) is in docs/ops/attention.md (python bench/abstraction/attention.py --aot-table); CI
compiles the subset below to stay within its time budget."""
import functools
import warnings

import pytest
import torch

from tilekit.ops.attention.op import _default_config, kernel_example, varlen_kernel_example

pytest.importorskip("triton")
warnings.filterwarnings("ignore", message=".*no dispatch table.*")
MATRIX_INSTRUCTION = {"sm_80": "mma.sync", "sm_90": "wgmma", "gfx90a": "mfma", "gfx942": "mfma"}
LLAMA = (1, 32, 8, 4096, 4096)


@functools.lru_cache(maxsize=None)
def artifact(target, kernel, D):
    if kernel.startswith("varlen_"):  # 8 packed sequences of 4096
        example = varlen_kernel_example((8,) + LLAMA[1:] + (D,), torch.float16, "cuda", kernel[7:], target=target)
    else:
        example = kernel_example(LLAMA + (D,), torch.float16, "cuda", kernel, target=target)
    tk_kernel, args, kwargs = example
    return tk_kernel.compile(target, *args, **kwargs)


# The entries each architecture changed (and the wgmma ones on sm_90), a subset for the CI budget; the full
# 48-row table (every kernel x target x D, dense and varlen) is the bench's --aot-table.
CASES = [("sm_80", "dkdv", 64), ("sm_80", "dkdv", 128), ("sm_80", "dq", 64), ("sm_90", "fwd", 128),
         ("sm_90", "dkdv", 128), ("sm_90", "dq", 128), ("gfx942", "fwd", 64), ("gfx942", "fwd", 128),
         ("gfx942", "dkdv", 128), ("gfx942", "dq", 128), ("gfx90a", "dkdv", 64), ("gfx90a", "dq", 64),
         # the varlen kernels' own entries (where the dense entry spilled)
         ("gfx942", "varlen_fwd", 128), ("sm_80", "varlen_dkdv", 64), ("sm_90", "varlen_dkdv", 128),
         # D=256 (its own entries; dK/dV spilled 8-528 bytes at half the D=128 tiles) and a D=96 padded to 128
         ("sm_90", "fwd", 256), ("sm_90", "dkdv", 256), ("sm_80", "dkdv", 256), ("sm_90", "varlen_dkdv", 256),
         ("gfx942", "fwd", 96)]
# sm_90 takes wgmma where a warp group has 64 rows; the D=256 dK/dV tiles (BN=16/32) use mma.sync
MMA_SYNC_ON_SM90 = {("dkdv", 256), ("varlen_dkdv", 256)}


@pytest.mark.parametrize("target, kernel, D", CASES)
def test_compiles_with_matrix_instructions_and_no_spills(target, kernel, D):
    art = artifact(target, kernel, D)
    wgmma_fallback = target == "sm_90" and (kernel, D) in MMA_SYNC_ON_SM90
    assert art.instructions["mma.sync" if wgmma_fallback else MATRIX_INSTRUCTION[target]] > 0, art.report()
    if target == "sm_90" and not wgmma_fallback:
        assert art.instructions["mma.sync"] == 0, art.report()  # wgmma, not the Ampere fallback
    assert art.resources["spills"] == 0, art.report()
    if target.startswith("sm_"):
        assert art.resources["stack_bytes"] == 0, art.report()
        assert 0 < art.resources["registers"] <= 255, art.report()
    else:
        assert 0 < art.resources["vgprs"] <= 512, art.report()


def test_defaults_are_chosen_per_architecture():
    shape = LLAMA + (128,)
    cuda = torch.device("cuda")
    amd = _default_config(shape, torch.float16, cuda, "fwd", target="gfx942")
    nvidia = _default_config(shape, torch.float16, cuda, "fwd", target="sm_90")
    assert (amd["BN"], nvidia["BN"]) == (32, 64)
    assert _default_config(shape, torch.float16, cuda, "dkdv", target="gfx90a") == \
        _default_config(shape, torch.float16, cuda, "dkdv", target="gfx942")
    assert _default_config(shape, torch.float16, cuda, "dkdv", target="sm_80")["BM"] < \
        _default_config(shape, torch.float16, cuda, "dkdv", target="sm_90")["BM"]
