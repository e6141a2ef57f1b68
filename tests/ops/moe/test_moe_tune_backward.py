"""The backward's grouped GEMMs under the tuning protocol (fused_moe.bwd_gate_up, .bwd_dw_gate_up,
.bwd_dw_down): every config of a small space launches against one set of inputs and passes the gate's
reference, and a looked-up config reaches the op's backward launches."""
import pytest
import torch

import tilekit.ops as tk_ops
from tilekit.autotune.protocol import kernels
from tilekit.ops import dispatch
from tilekit.ops.moe import op as moe_op
from tilekit.tolerances import assert_close, op_table

SHAPE = (19, 24, 40, 4, 2)  # T, H, F, E, top_k: ragged
BACKWARD_IDS = ["fused_moe.bwd_gate_up", "fused_moe.bwd_dw_gate_up", "fused_moe.bwd_dw_down"]


@pytest.mark.parametrize("kernel_id", BACKWARD_IDS)
def test_backward_kernel_configs_launch_against_one_set_of_inputs(kernel_id):
    k = kernels()[kernel_id]
    assert k.shape_names == ("T", "H", "F", "E", "top_k")
    inputs = k.inputs_for(SHAPE, (), torch.float32, torch.Generator().manual_seed(0))
    want = k.reference_for(inputs, ())
    default = k.default_config_for(SHAPE, (), torch.float32, torch.device("cpu"))
    varied = [{"BM": 16, "BN": 16}, {"BM": 32, "BN": 64, "BK": 16}] if "BM" in default else [{"BR": 16, "BC": 64},
                                                                                              {"BR": 64, "BC": 16}]
    for change in [{}, *varied]:
        config = {**default, **change}
        assert k.why_invalid(config, torch.float32) is None, config
        out = k.make_output(inputs).fill_(float("nan"))
        grid, args, kwargs = k.launch_args_for(inputs, out, config, ())
        k.kernel[grid](*args, backend="reference", **kwargs)
        assert_close(out, want, table=op_table("moe", "FUSED_BACKWARD"), msg=f"{kernel_id} {config}")


def test_the_backward_launches_the_looked_up_configs(monkeypatch):
    looked_up = {"fused_moe.bwd_gate_up": {"BM": 32, "BN": 16, "BK": 16, "num_warps": 2, "num_stages": 1},
                 "fused_moe.bwd_dw_gate_up": {"BR": 16, "BC": 32, "num_warps": 2, "num_stages": 1},
                 "fused_moe.bwd_dw_down": {"BR": 32, "BC": 16, "num_warps": 1, "num_stages": 1}}
    asked = []

    def provider(kernel_id, shape, dtype, device, backend):
        asked.append((kernel_id, tuple(shape)))
        return looked_up.get(kernel_id)

    seen = []
    for name in ("gate_up_backward_launch_args", "weight_grad_launch_args"):
        real = getattr(moe_op, name)
        # config is the last positional argument of both
        monkeypatch.setattr(moe_op, name, lambda *a, _real=real, **kw: (seen.append(a[-1]), _real(*a, **kw))[1])
    previous = dispatch.set_config_provider(provider)
    try:
        gen = torch.Generator().manual_seed(3)
        tokens, hidden, ffn, experts, top_k = SHAPE
        x = torch.randn(tokens, hidden, generator=gen, requires_grad=True)
        w_gate_up = (torch.randn(experts, 2 * ffn, hidden, generator=gen) / hidden ** 0.5).requires_grad_()
        w_down = (torch.randn(experts, hidden, ffn, generator=gen) / ffn ** 0.5).requires_grad_()
        weights, ids = tk_ops.moe_route(torch.randn(tokens, experts, generator=gen), top_k)
        y = tk_ops.fused_moe(x, w_gate_up, w_down, weights, ids)
        got = torch.autograd.grad(y, [x, w_gate_up, w_down], torch.ones_like(y))
    finally:
        dispatch.set_config_provider(previous)
    assert {kid for kid, shape in asked if shape == SHAPE} >= set(BACKWARD_IDS)
    assert seen == list(looked_up.values())
    ref = [t.detach().double().requires_grad_() for t in (x, w_gate_up, w_down)]
    want = torch.autograd.grad(moe_op.fused_moe_reference(*ref, weights.double(), ids), ref,
                               torch.ones(y.shape, dtype=torch.float64))
    for g, w in zip(got, want):
        assert_close(g, w.float(), table=op_table("moe", "FUSED_BACKWARD"))
