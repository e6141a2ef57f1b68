"""Regressions of what the attention family needed from tilekit's compile report: the cubin report counts the
stack frame ptxas spills into (it read only LOCAL, which hid the dK/dV kernel's 7960-byte frame at sm_80)."""
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
