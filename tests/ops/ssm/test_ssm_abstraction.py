"""bench/abstraction/ssm.py's CPU half: tilekit's SSD chunk-scan kernel and the hand-written Triton kernel it is
compared with compute the same thing (both under the Triton interpreter, at a tiny ragged fp16 shape with two
sub-chunks per chunk), and both match a float64 recurrence."""
import importlib.util
import pathlib

import pytest

from conftest import cpu_backends

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
PATH = pathlib.Path(__file__).resolve().parents[3] / "bench" / "abstraction" / "ssm.py"


@pytest.mark.skipif("triton" not in cpu_backends(), reason="the Triton interpreter is not installed")
def test_tilekit_and_hand_written_kernels_agree():
    spec = importlib.util.spec_from_file_location("ssm_abstraction_bench", PATH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    diffs = bench.compare_interpreted(chunk=32, sub=16, block_p=16)
    scale = diffs["y scale"]
    assert scale > 1.0
    assert diffs["y tilekit vs hand"] <= 1e-3 * scale and diffs["final tilekit vs hand"] <= 1e-3 * scale
    # fp16 inputs and fp16 matmul operands against float64: within the fp16 forward bound of ops/ssm/tolerances.py
    from tilekit.tolerances import op_table
    import torch
    atol, rtol = op_table("ssm", "FORWARD")[torch.float16]
    assert diffs["y tilekit vs float64"] <= atol + rtol * scale
