"""fused_moe's gate_up grouped GEMM compiled ahead of time for real GPU targets at Mixtral shapes
(H=4096, F=14336, E=8, top-2): no spills, and matrix instructions."""
import functools

import pytest
import torch

from tilekit.ops.moe.op import gate_up_example

MATRIX_INSTRUCTIONS = {"sm_80": ("mma.sync",), "sm_90": ("wgmma", "mma.sync"), "gfx90a": ("mfma",),
                       "gfx942": ("mfma",)}
# (target, tokens): each compiled once per session; both token counts on sm_90 and gfx942
CASES = [("sm_90", 16), ("sm_90", 4096), ("sm_80", 4096), ("gfx90a", 16), ("gfx942", 16), ("gfx942", 4096)]


@functools.lru_cache(maxsize=None)
def artifact(target, tokens):
    kernel, args, kwargs = gate_up_example((tokens, 4096, 14336, 8, 2), torch.float16, torch.device("cuda"))
    return kernel.compile(target, *args, **kwargs)


@pytest.mark.parametrize("target,tokens", CASES)
def test_gate_up_compiles_without_spills_and_uses_matrix_instructions(target, tokens):
    art = artifact(target, tokens)
    assert art.resources["spills"] == 0, art.report()
    assert sum(art.instructions[name] for name in MATRIX_INSTRUCTIONS[target]) > 0, art.report()
    if target == "sm_90" and tokens == 4096:
        assert art.instructions["wgmma"] > 0, art.report()  # a 64-row block takes the warp-group path


# the backward's grouped GEMMs at their GPU defaults: (target, tokens, kind), each compiled once per session
# (sm_80 at 4096 is the case whose 4-warp default had an 8-byte stack frame)
BACKWARD_CASES = [("sm_90", 4096, "gate_up"), ("sm_80", 4096, "gate_up"), ("sm_90", 4096, "dw_down"),
                  ("sm_80", 16, "dw_gate_up"), ("gfx942", 4096, "gate_up")]


@functools.lru_cache(maxsize=None)
def backward_artifact(target, tokens, kind):
    from tilekit.ops.moe.op import backward_example
    kernel, args, kwargs = backward_example(kind, (tokens, 4096, 14336, 8, 2), torch.float16, torch.device("cuda"),
                                            target=target)
    return kernel.compile(target, *args, **kwargs)


@pytest.mark.parametrize("target,tokens,kind", BACKWARD_CASES)
def test_backward_kernels_compile_without_spills_and_use_matrix_instructions(target, tokens, kind):
    art = backward_artifact(target, tokens, kind)
    assert art.resources["spills"] == 0, art.report()  # stack frame and local bytes both
    assert sum(art.instructions[name] for name in MATRIX_INSTRUCTIONS[target]) > 0, art.report()
