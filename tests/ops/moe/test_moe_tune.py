"""fused_moe.gate_up and fused_moe.down under the tuning protocol: inputs that do not depend on BLOCK_M, a
launch that runs the alignment for the config's BM, and a tiny real `tilekit tune` job on PoCL whose winners
the op then launches."""
import pytest
import torch

import tilekit.ops as tk_ops
from tilekit.autotune import table
from tilekit.autotune.protocol import kernels
from tilekit.cli import main
from tilekit.ops.moe import kernels as moe_kernels, op as moe_op
from tilekit.tolerances import assert_close, op_table

SHAPE = (19, 24, 40, 4, 2)  # T, H, F, E, top_k: ragged


@pytest.mark.parametrize("kernel_id", ["fused_moe.gate_up", "fused_moe.down"])
def test_every_block_m_launches_against_one_set_of_inputs(kernel_id):
    """The same inputs and output shape serve every BM; each launch matches the reference."""
    k = kernels()[kernel_id]
    inputs = k.inputs_for(SHAPE, (), torch.float32, torch.Generator().manual_seed(0))
    want = k.reference_for(inputs, ())
    for block_m in (16, 32, 64):
        out = k.make_output(inputs).fill_(float("nan"))
        config = {**k.default_config_for(SHAPE, (), torch.float32, torch.device("cpu")), "BM": block_m}
        assert k.why_invalid(config, torch.float32) is None
        grid, args, kwargs = k.launch_args_for(inputs, out, config, ())
        k.kernel[grid](*args, backend="reference", **kwargs)
        assert_close(out, want, table=op_table("moe", "FUSED"), msg=f"BM={block_m}")


def test_tiny_tune_job_writes_both_kernels_and_the_op_launches_the_winners(fresh_tuning_cache, monkeypatch,
                                                                          capsys):
    from tilekit.backends.opencl import available
    ok, why = available()
    if not ok:
        pytest.skip(f"OpenCL unavailable: {why}")
    rc = main(["tune", "fused_moe.gate_up", "fused_moe.down", "--shapes", ",".join(map(str, SHAPE)),
               "--backend", "opencl", "--trials", "2",
               "--space", "BM=16,32", "BN=16", "BK=16", "num_warps=4", "num_stages=1", "--sampler", "random",
               "--repeats", "2"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    [(_, data)] = table.all_tables()
    entries = {e["kernel"]: e for e in data["entries"]}
    assert set(entries) == {"fused_moe.gate_up", "fused_moe.down"}
    assert entries["fused_moe.gate_up"]["kernel_hash"] == moe_kernels.moe_gate_up_kernel.source_hash
    assert entries["fused_moe.down"]["kernel_hash"] == moe_kernels.moe_down_kernel.source_hash
    for e in entries.values():
        assert e["shape"] == list(SHAPE) and e["tuned_s"] <= e["default_s"]
    seen = {}
    for name in ("gate_up_launch_args", "down_launch_args"):
        real = getattr(moe_op, name)
        monkeypatch.setattr(moe_op, name, lambda *a, _real=real, _name=name: (seen.setdefault(_name, a[-1]),
                                                                              _real(*a))[1])
    x, w_gate_up, weights, ids = kernels()["fused_moe.gate_up"].inputs_for(SHAPE, (), torch.float32,
                                                                         torch.Generator().manual_seed(1))
    w_down = torch.randn(SHAPE[3], SHAPE[1], SHAPE[2]) / SHAPE[2] ** 0.5
    with tk_ops.use_backend("opencl"):
        y = tk_ops.fused_moe(x, w_gate_up, w_down, weights, ids)
    assert seen["gate_up_launch_args"] == entries["fused_moe.gate_up"]["config"]
    assert seen["down_launch_args"] == entries["fused_moe.down"]["config"]
    assert_close(y, moe_op.fused_moe_reference(x, w_gate_up, w_down, weights, ids), table=op_table("moe", "FUSED"))
