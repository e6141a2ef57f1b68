"""Regressions of what the attention family needed from tilekit's compile report: the cubin report counts the
stack frame ptxas spills into (it read only LOCAL, which hid the dK/dV kernel's 7960-byte frame at sm_80); and
a unit-axis block load of a 4-D tensor feeds wgmma from shared memory (the Triton lowering loads it at its
squeezed shape: a reshape of the loaded tile sent the operand through registers)."""
import warnings

import pytest
import torch

import tilekit as tk

warnings.filterwarnings("ignore", message=".*no dispatch table.*")


@tk.kernel
def _big_live_tile(X, Y, BR: tk.constexpr, BC: tk.constexpr):
    # a 64 x 128 fp32 tile carried through a loop by one warp: 256 values per thread, so ptxas must spill
    acc = tk.zeros((BR, BC), tk.float32)
    for r in tk.range(0, X.shape[0], BR):
        acc = acc * 0.5 + tk.load(X, (r, 0), (BR, BC)).to(tk.float32)
    tk.store(Y, (0, 0), acc)


def test_cubin_report_counts_stack_spills():
    pytest.importorskip("triton")
    x = torch.empty(4096, 128, dtype=torch.float16, device="meta")
    y = torch.empty(128, 128, dtype=torch.float32, device="meta")
    art = _big_live_tile.compile("sm_80", x, y, BR=64, BC=128, num_warps=1, num_stages=1)
    assert art.resources["stack_bytes"] > 0, art.report()  # ptxas did spill: the frame holds the tile
    assert art.resources["spills"] > 0, art.report()


@tk.kernel
def _qk_from_4d(Q, K, O, BM: tk.constexpr, BN: tk.constexpr, BD: tk.constexpr):
    # attention's loop-invariant Q tile: a (1, 1, BM, BD) block of a 4-D tensor, reshaped to 2-D for the dot
    q = tk.load(Q, (0, tk.program_id(1), tk.program_id(0) * BM, 0), (1, 1, BM, BD)).reshape((BM, BD))
    acc = tk.zeros((BM, BN), tk.float32)
    for n0 in tk.range(0, K.shape[0], BN):
        acc = acc + tk.dot(q, tk.load(K, (n0, 0), (BN, BD)).T)
    tk.store(O, (tk.program_id(0) * BM, 0), acc)


def test_unit_axis_load_keeps_the_dot_operand_in_shared_memory():
    pytest.importorskip("triton")
    meta = dict(dtype=torch.float16, device="meta")
    q, k = torch.empty(1, 4, 4096, 128, **meta), torch.empty(4096, 128, **meta)
    o = torch.empty(4096, 64, dtype=torch.float32, device="meta")
    art = _qk_from_4d.compile("sm_90", q, k, o, BM=64, BN=64, BD=128, num_warps=4, num_stages=2)
    assert art.instructions["wgmma"] > 0, art.report()
    assert "ldmatrix" not in art.assembly, art.report()
