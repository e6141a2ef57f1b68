"""moe's tuning declarations (the protocol in ``tilekit.autotune.protocol``): ``fused_moe.gate_up`` and
``fused_moe.down``, shape tuple ``T,H,F,E,top_k`` (keyed by the token count, as vLLM keys its tuned files).

The grouped GEMMs walk the alignment, whose length depends on BLOCK_M (a tunable). So ``make_inputs`` makes
only what no config changes: x, the weights, and the routing (top-k ids and weights); for the down kernel
also its intermediate, which is in slot order (T*top_k rows) and so the same for every BLOCK_M.
``launch_args(inputs, out, config)`` runs moe_align for config["BM"] and returns the kernel's launch: the
tuner times only that launch, not the alignment. The op runs each GEMM with its own tuned BLOCK_M."""
import math

import torch

from ...autotune.protocol import TuneKernel, register
from . import op
from .kernels import moe_down_kernel, moe_gate_up_kernel
from .tolerances import FUSED

SHAPE_NAMES = ("T", "H", "F", "E", "top_k")

MIXTRAL_8X7B = (4096, 14336, 8, 2)        # H, F, E, top_k
QWEN_MOE_A2_7B = (2048, 1408, 60, 4)
QWEN2_MOE_57B = (3584, 2560, 64, 8)
QWEN3_MOE_30B = (2048, 768, 128, 8)
DEEPSEEK_V3 = (7168, 2048, 256, 8)        # grouped sigmoid routing: 8 groups, 4 kept

TOKEN_COUNTS = (1, 16, 64, 256, 1024, 4096)

DEFAULT_SHAPES = {
    "gpu": [(t, *model) for model in (MIXTRAL_8X7B, QWEN_MOE_A2_7B, QWEN2_MOE_57B, QWEN3_MOE_30B, DEEPSEEK_V3)
            for t in TOKEN_COUNTS],
    "cpu": [(37, 48, 80, 8, 2), (64, 64, 32, 64, 8)],
}

# Distinct random experts drawn; more experts repeat them (values do not change the timing, and drawing
# DeepSeek-V3's 256 x 4096 x 7168 weights afresh for every trial would take minutes).
DRAWN_EXPERTS = 8


def _expert_weights(experts, rows, cols, dtype, generator):
    drawn = torch.randn(min(experts, DRAWN_EXPERTS), rows, cols, generator=generator) / math.sqrt(cols)
    reps = -(-experts // drawn.shape[0])
    return drawn.repeat(reps, 1, 1)[:experts].contiguous().to(dtype)


def _routing(tokens, experts, top_k, generator):
    weights, ids = op.moe_route_reference(torch.randn(tokens, experts, generator=generator), top_k)
    return weights, ids


def _slot_tokens(ids):
    return torch.arange(ids.numel(), device=ids.device) // ids.shape[1]


def gate_up_reference(x, w_gate_up, weights, ids, activation="silu"):
    """The slot-order intermediate act(W_gate[e] x[t]) * (W_up[e] x[t]), fp32-accumulated, in x's dtype."""
    ffn = w_gate_up.shape[1] // 2
    flat, tokens = ids.reshape(-1).long(), _slot_tokens(ids)
    out = torch.zeros(flat.numel(), ffn, dtype=torch.float32, device=x.device)
    for e in flat.unique().tolist():
        slots = (flat == e).nonzero().squeeze(1)
        h = x[tokens[slots]].float() @ w_gate_up[e].float().T
        gate, up = h[:, :ffn], h[:, ffn:]
        act = torch.nn.functional.silu(gate) if activation == "silu" else torch.nn.functional.gelu(gate, approximate="tanh")
        out[slots] = act * up
    return out.to(x.dtype)


def down_reference(inter, w_down, weights, ids):
    """One fp32 row per slot: weights[s] * W_down[e] inter[s]."""
    flat = ids.reshape(-1).long()
    flat_weights = weights.reshape(-1).float()
    out = torch.zeros(flat.numel(), w_down.shape[1], dtype=torch.float32, device=inter.device)
    for e in flat.unique().tolist():
        slots = (flat == e).nonzero().squeeze(1)
        out[slots] = (inter[slots].float() @ w_down[e].float().T) * flat_weights[slots, None]
    return out


def make_gate_up_inputs(shape, dtype, generator):
    tokens, hidden, ffn, experts, top_k = shape
    x = torch.randn(tokens, hidden, generator=generator).to(dtype)
    w_gate_up = _expert_weights(experts, 2 * ffn, hidden, dtype, generator)
    weights, ids = _routing(tokens, experts, top_k, generator)
    return x, w_gate_up, weights, ids


def make_down_inputs(shape, dtype, generator):
    x, w_gate_up, weights, ids = make_gate_up_inputs(shape, dtype, generator)
    _, hidden, ffn, experts, _ = shape
    w_down = _expert_weights(experts, hidden, ffn, dtype, generator)
    return gate_up_reference(x, w_gate_up, weights, ids), w_down, weights, ids


def _align(ids, num_experts, block_m):
    return torch.ops.tilekit.moe_align(ids, num_experts, block_m)


def gate_up_launch_args(inputs, out, config):
    x, w_gate_up, weights, ids = inputs
    sorted_ids, expert_ids, num_padded = _align(ids, w_gate_up.shape[0], config["BM"])
    return op.gate_up_launch_args(x, w_gate_up, sorted_ids, expert_ids, num_padded, out, ids.shape[1], "silu",
                                  config)


def down_launch_args(inputs, out, config):
    inter, w_down, weights, ids = inputs
    sorted_ids, expert_ids, num_padded = _align(ids, w_down.shape[0], config["BM"])
    return op.down_launch_args(inter, w_down, sorted_ids, expert_ids, num_padded, weights.reshape(-1), out,
                               ids.shape[1], config)


def _default(shape, dtype, device):
    return op.default_gemm_config(shape, dtype, device)


GATE_UP = register(TuneKernel(
    id=op.KERNEL_IDS["gate_up"], kernel=moe_gate_up_kernel, shape_names=SHAPE_NAMES,
    make_inputs=make_gate_up_inputs,
    make_output=lambda inputs: torch.empty(inputs[3].numel(), inputs[1].shape[1] // 2, dtype=inputs[0].dtype),
    launch_args=gate_up_launch_args, reference=gate_up_reference, default_config=_default,
    default_shapes=DEFAULT_SHAPES, tolerances=FUSED,
))
DOWN = register(TuneKernel(
    id=op.KERNEL_IDS["down"], kernel=moe_down_kernel, shape_names=SHAPE_NAMES,
    make_inputs=make_down_inputs,
    make_output=lambda inputs: torch.empty(inputs[3].numel(), inputs[1].shape[1], dtype=torch.float32),
    launch_args=down_launch_args, reference=down_reference, default_config=_default,
    default_shapes=DEFAULT_SHAPES, tolerances=FUSED,
))
