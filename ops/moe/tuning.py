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
from .kernels import moe_down_kernel, moe_gate_up_backward_kernel, moe_gate_up_kernel, moe_weight_grad_kernel
from .tolerances import FUSED, FUSED_BACKWARD

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


# ---- the backward's grouped GEMMs -------------------------------------------------------------------
# fused_moe.bwd_gate_up (moe_gate_up_backward_kernel): its BM is the backward's alignment block, so its
# launch_args align for config["BM"]; the tuned output is d[gate, up] (slot order, 2F wide), and h and the
# d(weights) partials are scratch of the launch (their shapes follow BN). fused_moe.bwd_dw_gate_up and
# fused_moe.bwd_dw_down (moe_weight_grad_kernel, one entry per launch) walk the alignment of the default
# backward BM at the shape: the kernel's BM is its reduction step and must be the alignment's, so it is not
# theirs to tune.

def _activation_and_derivative(gate, activation="silu"):
    if activation == "silu":
        s = torch.sigmoid(gate)
        return gate * s, s * (1 + gate * (1 - s))
    c = 0.7978845608028654
    th = torch.tanh(c * (gate + 0.044715 * gate ** 3))
    return 0.5 * gate * (1 + th), 0.5 * (1 + th) + 0.5 * gate * (1 - th * th) * c * (1 + 3 * 0.044715 * gate * gate)


def make_bwd_gate_up_inputs(shape, dtype, generator):
    x, w_gate_up, weights, ids = make_gate_up_inputs(shape, dtype, generator)
    _, hidden, ffn, experts, _ = shape
    w_down = _expert_weights(experts, hidden, ffn, dtype, generator)
    grad_y = torch.randn(x.shape, generator=generator).to(dtype)
    return x, w_gate_up, w_down, grad_y, weights, ids


def bwd_gate_up_reference(x, w_gate_up, w_down, grad_y, weights, ids):
    """d[gate, up] per slot, fp32 in registers, in x's dtype: dh = w dy[t] W_down[e], then through the SwiGLU."""
    ffn = w_gate_up.shape[1] // 2
    flat, tokens = ids.reshape(-1).long(), _slot_tokens(ids)
    flat_weights = weights.reshape(-1).float()
    out = torch.zeros(flat.numel(), 2 * ffn, dtype=torch.float32, device=x.device)
    for e in flat.unique().tolist():
        slots = (flat == e).nonzero().squeeze(1)
        h = x[tokens[slots]].float() @ w_gate_up[e].float().T
        gate, up = h[:, :ffn], h[:, ffn:]
        act, d_act = _activation_and_derivative(gate)
        dh = (grad_y[tokens[slots]].float() @ w_down[e].float()) * flat_weights[slots, None]
        out[slots] = torch.cat([dh * up * d_act, dh * act], dim=1)
    return out.to(x.dtype)


def bwd_gate_up_launch_args(inputs, out, config):
    x, w_gate_up, w_down, grad_y, weights, ids = inputs
    ffn, slots = w_gate_up.shape[1] // 2, ids.numel()
    sorted_ids, expert_ids, num_padded = _align(ids, w_gate_up.shape[0], config["BM"])
    inter = x.new_empty((slots, ffn))
    parts = x.new_empty((slots, -(-ffn // config["BN"])), dtype=torch.float32)
    return op.gate_up_backward_launch_args(x, w_gate_up, w_down, grad_y, sorted_ids, expert_ids, num_padded,
                                           weights.reshape(-1), inter, out, parts, ids.shape[1], "silu", config)


def _starts(expert_ids, num_padded, num_experts, block_m):
    """Each expert's first M-block and the used-block count (E + 1,), in torch (meta tensors too): the
    alignment plumbing the tuner does not time."""
    used = torch.arange(expert_ids.shape[0], device=expert_ids.device) < num_padded // block_m
    lower = expert_ids[:, None] < torch.arange(num_experts + 1, device=expert_ids.device)[None, :]
    return (used[:, None] & lower).sum(0).to(torch.int32)


def _backward_block_m(spec, dtype, device):
    return op.default_backward_configs(spec, dtype, device)[0]["BM"]


def make_bwd_dw_gate_up_inputs(shape, dtype, generator):
    """d[gate, up] (slot order), x, the routing, and an (E, 0) tensor that carries the expert count."""
    tokens, hidden, ffn, experts, top_k = shape
    weights, ids = _routing(tokens, experts, top_k, generator)
    grad_gate_up = (0.1 * torch.randn(tokens * top_k, 2 * ffn, generator=generator)).to(dtype)
    x = torch.randn(tokens, hidden, generator=generator).to(dtype)
    return grad_gate_up, x, weights, ids, torch.empty(experts, 0)


def make_bwd_dw_down_inputs(shape, dtype, generator):
    """dy, h (slot order), the routing, and an (E, 0) tensor that carries the expert count."""
    tokens, hidden, ffn, experts, top_k = shape
    weights, ids = _routing(tokens, experts, top_k, generator)
    grad_y = torch.randn(tokens, hidden, generator=generator).to(dtype)
    inter = (0.1 * torch.randn(tokens * top_k, ffn, generator=generator)).to(dtype)
    return grad_y, inter, weights, ids, torch.empty(experts, 0)


def _weight_grad_reference(a, b, weights, ids, experts, by_token):
    flat, tokens = ids.reshape(-1).long(), _slot_tokens(ids)
    rows, cols = (a.shape[1], b.shape[1])
    out = torch.zeros(experts.shape[0], rows, cols, dtype=torch.float32, device=a.device)
    for e in flat.unique().tolist():
        slots = (flat == e).nonzero().squeeze(1)
        if by_token:  # a = dy at the token times the routing weight (rounded like the kernel's operand)
            lhs = (a[tokens[slots]].float() * weights.reshape(-1)[slots, None].float()).to(a.dtype).float()
            out[e] = lhs.T @ b[slots].float()
        else:
            out[e] = a[slots].float().T @ b[tokens[slots]].float()
    return out.to(a.dtype)


def _weight_grad_launch_args(inputs, out, config, by_token):
    a, b, weights, ids, experts = inputs
    num_experts, top_k = experts.shape[0], ids.shape[1]
    if by_token:  # a = dy (T, H), b = h (T * top_k, F)
        spec = (a.shape[0], a.shape[1], b.shape[1], num_experts, top_k)
    else:  # a = d[gate, up] (T * top_k, 2F), b = x (T, H)
        spec = (b.shape[0], b.shape[1], a.shape[1] // 2, num_experts, top_k)
    block_m = _backward_block_m(spec, a.dtype, a.device)
    sorted_ids, expert_ids, num_padded = _align(ids, num_experts, block_m)
    starts = _starts(expert_ids, num_padded, num_experts, block_m)
    return op.weight_grad_launch_args(a, b, sorted_ids, starts, weights.reshape(-1), out, ids.shape[1], block_m,
                                      by_token, config)


def _bwd_default(index):
    return lambda shape, dtype, device: op.default_backward_configs(shape, dtype, device)[index]


BWD_GATE_UP = register(TuneKernel(
    id=op.KERNEL_IDS["bwd_gate_up"], kernel=moe_gate_up_backward_kernel, shape_names=SHAPE_NAMES,
    make_inputs=make_bwd_gate_up_inputs,
    make_output=lambda inputs: torch.empty(inputs[5].numel(), inputs[1].shape[1], dtype=inputs[0].dtype),
    launch_args=bwd_gate_up_launch_args, reference=bwd_gate_up_reference, default_config=_bwd_default(0),
    default_shapes=DEFAULT_SHAPES, tolerances=FUSED_BACKWARD,
))
BWD_DW_GATE_UP = register(TuneKernel(
    id=op.KERNEL_IDS["bwd_dw_gate_up"], kernel=moe_weight_grad_kernel, shape_names=SHAPE_NAMES,
    make_inputs=make_bwd_dw_gate_up_inputs,
    make_output=lambda inputs: torch.empty(inputs[4].shape[0], inputs[0].shape[1], inputs[1].shape[1],
                                           dtype=inputs[0].dtype),
    launch_args=lambda inputs, out, config: _weight_grad_launch_args(inputs, out, config, False),
    reference=lambda *inputs: _weight_grad_reference(*inputs, by_token=False), default_config=_bwd_default(1),
    default_shapes=DEFAULT_SHAPES, tolerances=FUSED_BACKWARD,
))
BWD_DW_DOWN = register(TuneKernel(
    id=op.KERNEL_IDS["bwd_dw_down"], kernel=moe_weight_grad_kernel, shape_names=SHAPE_NAMES,
    make_inputs=make_bwd_dw_down_inputs,
    make_output=lambda inputs: torch.empty(inputs[4].shape[0], inputs[0].shape[1], inputs[1].shape[1],
                                           dtype=inputs[0].dtype),
    launch_args=lambda inputs, out, config: _weight_grad_launch_args(inputs, out, config, True),
    reference=lambda *inputs: _weight_grad_reference(*inputs, by_token=True), default_config=_bwd_default(2),
    default_shapes=DEFAULT_SHAPES, tolerances=FUSED_BACKWARD,
))
