"""The MoE torch ops: ``tilekit::moe_route`` (with its backward), ``tilekit::moe_align``, ``tilekit::fused_moe``
(with ``tilekit::fused_moe_backward``), and the ``moe_layer`` wrapper.

moe_route scores each token's logits (softmax or sigmoid), adds the optional selection bias, keeps the
best ``topk_groups`` of ``num_groups`` groups (a group's score is the sum of its two best sel), and picks
``top_k`` experts by descending sel, equal sel to the lower expert id. The weights are p at the chosen
experts, renormalised and scaled. moe_align is vLLM's moe_align_block_size made stable: three DSL
kernels (count per slot block and expert; one exclusive scan; scatter at base + in-block rank). fused_moe
is two grouped GEMMs over the alignment (gate/up with the activation fused, down times the routing weight)
and a fixed-order combine; its backward reuses the grouped-GEMM structure (README.md). No atomics.
"""
from typing import Optional

import torch

import tilekit as tk

from ...backends import default_backend
from ..dispatch import (backend_for, check_tensor, clamp_pow2, elem_bytes, gpu_arch_family, next_pow2,
                        provided_config)
from .kernels import (ALIGN_TUNABLES, BACKWARD_GEMM_TUNABLES, GEMM_TUNABLES, ROUTE_TUNABLES, WEIGHT_GRAD_TUNABLES,
                      moe_align_count_kernel, moe_align_scan_kernel,
                      moe_align_scatter_kernel, moe_combine_kernel, moe_down_kernel, moe_expert_starts_kernel,
                      moe_gate_up_backward_kernel, moe_gate_up_kernel, moe_route_backward_kernel, moe_route_kernel,
                      moe_weight_grad_kernel)

MAX_EXPERTS = 256
MAX_TOP_K = 8
SCORINGS = ("softmax", "sigmoid")
KERNEL_IDS = {"route": "moe_route.forward", "route_backward": "moe_route.backward", "align": "moe_align.main",
              "gate_up": "fused_moe.gate_up", "down": "fused_moe.down", "bwd_gate_up": "fused_moe.bwd_gate_up",
              "bwd_dw_gate_up": "fused_moe.bwd_dw_gate_up", "bwd_dw_down": "fused_moe.bwd_dw_down"}


# ---- moe_route --------------------------------------------------------------------------------------

def _check_route_args(logits, top_k, scoring, bias, num_groups, topk_groups):
    check_tensor("moe_route", "logits", logits, ranks=(2,))
    num_experts = logits.shape[1]
    if not 1 <= num_experts <= MAX_EXPERTS:
        raise ValueError(f"tilekit::moe_route: 'logits' has {num_experts} experts; 1 to {MAX_EXPERTS} are supported")
    if not isinstance(top_k, int) or not 1 <= top_k <= min(MAX_TOP_K, num_experts):
        raise ValueError(f"tilekit::moe_route: 'top_k' must be an int in [1, {min(MAX_TOP_K, num_experts)}], "
                         f"got {top_k!r}")
    if scoring not in SCORINGS:
        raise ValueError(f"tilekit::moe_route: 'scoring' must be one of {SCORINGS}, got {scoring!r}")
    if bias is not None:
        check_tensor("moe_route", "bias", bias, ranks=(1,))
        if bias.shape[0] != num_experts:
            raise ValueError(f"tilekit::moe_route: 'bias' has shape {tuple(bias.shape)}; expected ({num_experts},)")
        if bias.device != logits.device:
            raise ValueError(f"tilekit::moe_route: 'bias' is on {bias.device} but 'logits' is on {logits.device}")
    if num_groups:
        if num_experts % num_groups or num_experts // num_groups < 2:
            raise ValueError(f"tilekit::moe_route: 'num_groups'={num_groups} must divide E={num_experts} into "
                             f"groups of at least 2")
        if not isinstance(topk_groups, int) or not 1 <= topk_groups <= num_groups:
            raise ValueError(f"tilekit::moe_route: 'topk_groups' must be an int in [1, {num_groups}], "
                             f"got {topk_groups!r}")
        if top_k > topk_groups * (num_experts // num_groups):
            raise ValueError(f"tilekit::moe_route: 'top_k'={top_k} exceeds the experts of {topk_groups} groups")


def _route_config(tokens, num_experts, device, backend, kernel_id):
    config = provided_config(kernel_id, (tokens, num_experts), torch.float32, device, backend, ROUTE_TUNABLES, 4)
    if config:
        return config
    if device.type == "cpu":
        # The reference executor and PoCL pay per program: many tokens per program.
        return {"BT": 32 if num_experts <= 64 else 8, "num_warps": 8}
    return {"BT": 1 if num_experts > 64 else 4, "num_warps": 4}


def route_launch_args(logits, bias, weights, ids, top_k, scoring, renormalize, num_groups, topk_groups,
                      route_scale, config):
    tokens, num_experts = logits.shape
    groups = num_groups or 1
    grid = (tk.cdiv(tokens, config["BT"]),)
    group_size = num_experts // groups
    # the kernel's grouped layout: GP groups of SP columns (powers of two), one group without groups
    kwargs = dict(BT=config["BT"], GP=next_pow2(groups), SP=next_pow2(group_size), KP=next_pow2(top_k),
                  TOP_K=top_k, SIGMOID=scoring == "sigmoid", HAS_BIAS=bias is not None, NUM_GROUPS=groups,
                  GROUP_SIZE=group_size, TOPK_GROUPS=topk_groups or 1, RENORM=bool(renormalize),
                  num_warps=config["num_warps"])
    bias_row = logits if bias is None else bias.view(1, num_experts)
    return grid, (logits, bias_row, weights, ids, float(route_scale)), kwargs


@torch.library.custom_op("tilekit::moe_route", mutates_args=())
def moe_route_op(logits: torch.Tensor, top_k: int, scoring: str, renormalize: bool, bias: Optional[torch.Tensor],
                 num_groups: int, topk_groups: int, route_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    _check_route_args(logits, top_k, scoring, bias, num_groups, topk_groups)
    tokens = logits.shape[0]
    weights = torch.empty(tokens, top_k, dtype=torch.float32, device=logits.device)
    ids = torch.empty(tokens, top_k, dtype=torch.int32, device=logits.device)
    if tokens == 0:
        return weights, ids
    backend = backend_for(logits.device)
    config = _route_config(tokens, logits.shape[1], logits.device, backend, KERNEL_IDS["route"])
    grid, args, kwargs = route_launch_args(logits, bias, weights, ids, top_k, scoring, renormalize, num_groups,
                                           topk_groups, route_scale, config)
    moe_route_kernel[grid](*args, backend=backend, **kwargs)
    return weights, ids


@moe_route_op.register_fake
def _moe_route_fake(logits, top_k, scoring, renormalize, bias, num_groups, topk_groups, route_scale):
    _check_route_args(logits, top_k, scoring, bias, num_groups, topk_groups)
    tokens = logits.shape[0]
    return (logits.new_empty((tokens, top_k), dtype=torch.float32),
            logits.new_empty((tokens, top_k), dtype=torch.int32))


@torch.library.custom_op("tilekit::moe_route_backward", mutates_args=())
def moe_route_backward_op(grad_weights: torch.Tensor, logits: torch.Tensor, ids: torch.Tensor, scoring: str,
                          renormalize: bool, route_scale: float) -> torch.Tensor:
    grad_logits = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
    tokens, top_k = ids.shape
    if tokens == 0:
        return grad_logits
    backend = backend_for(logits.device)
    config = _route_config(tokens, logits.shape[1], logits.device, backend, KERNEL_IDS["route_backward"])
    moe_route_backward_kernel[(tk.cdiv(tokens, config["BT"]),)](
        logits, ids, grad_weights, grad_logits, float(route_scale), BT=config["BT"],
        EP=next_pow2(logits.shape[1]), KP=next_pow2(top_k), TOP_K=top_k, SIGMOID=scoring == "sigmoid",
        RENORM=bool(renormalize), num_warps=config["num_warps"], backend=backend)
    return grad_logits


@moe_route_backward_op.register_fake
def _moe_route_backward_fake(grad_weights, logits, ids, scoring, renormalize, route_scale):
    return logits.new_empty(logits.shape)


def _route_setup_context(ctx, inputs, output):
    logits, top_k, scoring, renormalize, bias, num_groups, topk_groups, route_scale = inputs
    ctx.save_for_backward(logits, output[1])
    ctx.scoring, ctx.renormalize, ctx.route_scale = scoring, renormalize, route_scale


def _route_backward(ctx, grad_weights, grad_ids):
    logits, ids = ctx.saved_tensors
    if grad_weights is None:
        grad_weights = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
    grad_logits = torch.ops.tilekit.moe_route_backward(grad_weights.contiguous(), logits, ids, ctx.scoring,
                                                       ctx.renormalize, ctx.route_scale)
    return grad_logits, None, None, None, None, None, None, None


moe_route_op.register_autograd(_route_backward, setup_context=_route_setup_context)


def moe_route(logits, top_k, *, scoring="softmax", renormalize=True, bias=None, num_groups=None,
              topk_groups=None, route_scale=1.0):
    """(weights (T, top_k) fp32, ids (T, top_k) int32): see DESIGN.md, section MoE."""
    if num_groups is None and topk_groups is not None:
        raise ValueError("tilekit::moe_route: 'topk_groups' needs 'num_groups'")
    return torch.ops.tilekit.moe_route(logits, top_k, scoring, bool(renormalize), bias, int(num_groups or 0),
                                       int(topk_groups or 0), float(route_scale))


def moe_route_reference(logits, top_k, *, scoring="softmax", renormalize=True, bias=None, num_groups=None,
                        topk_groups=None, route_scale=1.0):
    """The PyTorch oracle for moe_route, in float64; ties go to the lower id (a stable descending sort)."""
    x = logits.double()
    p = torch.softmax(x, -1) if scoring == "softmax" else torch.sigmoid(x)
    sel = p + bias.double() if bias is not None else p.clone()
    if num_groups:
        tokens, num_experts = x.shape
        grouped = sel.view(tokens, num_groups, num_experts // num_groups)
        group_score = grouped.sort(dim=-1, descending=True, stable=True).values[..., :2].sum(-1)
        kept = group_score.sort(dim=-1, descending=True, stable=True).indices[:, :topk_groups]
        mask = torch.zeros(tokens, num_groups, dtype=torch.bool).scatter_(1, kept, True)
        sel = sel.masked_fill(~mask.repeat_interleave(num_experts // num_groups, 1), -float("inf"))
    ids = sel.sort(dim=-1, descending=True, stable=True).indices[:, :top_k]
    weights = p.gather(1, ids)
    if renormalize:
        weights = weights / weights.sum(-1, keepdim=True)
    return (weights * route_scale).float(), ids.int()


# ---- moe_align --------------------------------------------------------------------------------------

def _check_align_args(ids, num_experts, block_m):
    if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"tilekit::moe_align: 'ids' must be an int32 or int64 tensor, got "
                        f"{getattr(ids, 'dtype', type(ids).__name__)}")
    if ids.dim() != 2:
        raise ValueError(f"tilekit::moe_align: 'ids' must be 2-D (T, top_k), got shape {tuple(ids.shape)}")
    if not isinstance(num_experts, int) or not 1 <= num_experts <= 1024:
        raise ValueError(f"tilekit::moe_align: 'num_experts' must be an int in [1, 1024], got {num_experts!r}")
    if not isinstance(block_m, int) or block_m < 1:
        raise ValueError(f"tilekit::moe_align: 'block_m' must be a positive int, got {block_m!r}")


def align_lengths(num_slots, num_experts, block_m):
    """The static lengths of sorted_ids and expert_ids (DESIGN.md)."""
    length = num_slots + num_experts * (block_m - 1)
    return length, tk.cdiv(length, block_m)


def _align_config(num_slots, num_experts, device, backend):
    config = provided_config(KERNEL_IDS["align"], (num_slots, num_experts), torch.int32, device, backend,
                             ALIGN_TUNABLES, 4)
    if config:
        return config
    slot_block = 64 if num_experts <= 64 else 16  # the one-hot tile is BS x EP
    return {"BS": slot_block, "num_warps": 4}


@torch.library.custom_op("tilekit::moe_align", mutates_args=())
def moe_align_op(ids: torch.Tensor, num_experts: int, block_m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_align_args(ids, num_experts, block_m)
    num_slots = ids.numel()
    length, num_m_blocks = align_lengths(num_slots, num_experts, block_m)
    device = ids.device
    if device.type == "cpu" and num_slots and (int(ids.min()) < 0 or int(ids.max()) >= num_experts):
        raise ValueError(f"tilekit::moe_align: 'ids' holds an expert outside [0, {num_experts})")
    sorted_ids = torch.full((length,), num_slots, dtype=torch.int32, device=device)
    expert_ids = torch.full((num_m_blocks,), -1, dtype=torch.int32, device=device)
    num_padded = torch.zeros(1, dtype=torch.int32, device=device)
    if num_slots == 0:
        return sorted_ids, expert_ids, num_padded
    backend = backend_for(device)
    config = _align_config(num_slots, num_experts, device, backend)
    slot_block, experts_padded = config["BS"], next_pow2(num_experts)
    flat = ids.reshape(-1)
    num_blocks = tk.cdiv(num_slots, slot_block)
    counts = torch.empty(num_blocks, experts_padded, dtype=torch.int32, device=device)
    base = torch.empty(num_blocks, experts_padded, dtype=torch.int32, device=device)
    common = dict(BS=slot_block, EP=experts_padded, num_warps=config["num_warps"], backend=backend)
    moe_align_count_kernel[(num_blocks,)](flat, counts, **common)
    moe_align_scan_kernel[(1,)](counts, base, expert_ids, num_padded, num_experts, BLOCK_M=block_m, **common)
    moe_align_scatter_kernel[(num_blocks,)](flat, base, sorted_ids, **common)
    return sorted_ids, expert_ids, num_padded


@moe_align_op.register_fake
def _moe_align_fake(ids, num_experts, block_m):
    _check_align_args(ids, num_experts, block_m)
    length, num_m_blocks = align_lengths(ids.numel(), num_experts, block_m)
    return (ids.new_empty((length,), dtype=torch.int32), ids.new_empty((num_m_blocks,), dtype=torch.int32),
            ids.new_empty((1,), dtype=torch.int32))


def moe_align(ids, num_experts, block_m):
    """(sorted_ids, expert_ids, num_padded): DESIGN.md's stable moe_align_block_size."""
    return torch.ops.tilekit.moe_align(ids, num_experts, block_m)


def moe_align_reference(ids, num_experts, block_m):
    """The PyTorch oracle for moe_align (a stable sort by expert, then padding)."""
    flat = ids.reshape(-1).long().cpu()
    num_slots = flat.numel()
    length, num_m_blocks = align_lengths(num_slots, num_experts, block_m)
    sorted_ids = torch.full((length,), num_slots, dtype=torch.int32)
    expert_ids = torch.full((num_m_blocks,), -1, dtype=torch.int32)
    order = torch.sort(flat, stable=True).indices
    counts = torch.bincount(flat, minlength=num_experts)
    pos = 0
    taken = 0
    for e in range(num_experts):
        c = int(counts[e])
        padded = -(-c // block_m) * block_m
        sorted_ids[pos:pos + c] = order[taken:taken + c].int()
        expert_ids[pos // block_m:(pos + padded) // block_m] = e
        pos += padded
        taken += c
    return sorted_ids, expert_ids, torch.tensor([pos], dtype=torch.int32)


# ---- fused_moe (forward) ----------------------------------------------------------------------------

ACTIVATIONS = ("silu", "gelu")


def _check_fused_args(x, w_gate_up, w_down, weights, ids, activation):
    check_tensor("fused_moe", "x", x, ranks=(2,))
    check_tensor("fused_moe", "w_gate_up", w_gate_up, ranks=(3,))
    check_tensor("fused_moe", "w_down", w_down, ranks=(3,))
    check_tensor("fused_moe", "weights", weights, ranks=(2,))
    tokens, hidden = x.shape
    num_experts, two_f, h2 = w_gate_up.shape
    if two_f % 2 or h2 != hidden:
        raise ValueError(f"tilekit::fused_moe: 'w_gate_up' is {tuple(w_gate_up.shape)}; expected (E, 2F, {hidden})")
    if tuple(w_down.shape) != (num_experts, hidden, two_f // 2):
        raise ValueError(f"tilekit::fused_moe: 'w_down' is {tuple(w_down.shape)}; expected "
                         f"({num_experts}, {hidden}, {two_f // 2})")
    for name, w in (("w_gate_up", w_gate_up), ("w_down", w_down)):
        if w.dtype != x.dtype or w.device != x.device:
            raise TypeError(f"tilekit::fused_moe: '{name}' is {w.dtype} on {w.device}; 'x' is {x.dtype} on {x.device}")
    if weights.dtype not in (torch.float32, x.dtype):
        raise TypeError(f"tilekit::fused_moe: 'weights' must be float32 or x's dtype, got {weights.dtype}")
    if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int32, torch.int64):
        raise TypeError("tilekit::fused_moe: 'ids' must be an int32 or int64 tensor")
    if ids.dim() != 2 or ids.shape[0] != tokens or tuple(weights.shape) != tuple(ids.shape):
        raise ValueError(f"tilekit::fused_moe: 'ids' {tuple(ids.shape)} and 'weights' {tuple(weights.shape)} "
                         f"must both be ({tokens}, top_k)")
    if activation not in ACTIVATIONS:
        raise ValueError(f"tilekit::fused_moe: 'activation' must be one of {ACTIVATIONS}, got {activation!r}")


def default_gemm_config(spec, dtype, device):
    """The grouped GEMMs' default config at SPEC (T, H, F, E, top_k), by tokens per expert (a few want a
    small BLOCK_M: less padding). Trial 0 of `tilekit tune fused_moe`."""
    tokens, _, _, num_experts, top_k = spec
    per_expert = max(1, tokens * top_k // num_experts)
    if torch.device(device).type == "cpu":
        return {"BM": 16 if per_expert <= 16 else 32, "BN": 32, "BK": 32, "num_warps": 4, "num_stages": 1}
    return {"BM": 16 if per_expert <= 16 else 64, "BN": 64 if per_expert <= 16 else 128, "BK": 64,
            "num_warps": 4 if per_expert <= 16 else 8, "num_stages": 3}


def gemm_config(spec, dtype, device, backend, kernel_id):
    """The grouped-GEMM config at SPEC: the provider's (a tuned table), else the default."""
    config = provided_config(kernel_id, spec, dtype, device, backend, GEMM_TUNABLES, elem_bytes(dtype))
    return config or default_gemm_config(spec, dtype, device)


def _acc(dtype):
    return tk.float64 if dtype == torch.float64 else tk.float32


def _wide(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def gate_up_launch_args(x, w_gate_up, sorted_ids, expert_ids, num_padded, inter, top_k, activation, config):
    """(grid, args, kwargs) of the gate_up grouped GEMM; config["BM"] must be the alignment's block_m."""
    ffn = w_gate_up.shape[1] // 2
    grid = (expert_ids.shape[0], tk.cdiv(ffn, config["BN"]))
    kwargs = dict(BM=config["BM"], BN=config["BN"], BK=config["BK"], GELU=activation == "gelu",
                  STAGES=config["num_stages"], ACC=_acc(x.dtype), num_warps=config["num_warps"])
    return grid, (x, w_gate_up, sorted_ids, expert_ids, num_padded, inter, top_k), kwargs


def down_launch_args(inter, w_down, sorted_ids, expert_ids, num_padded, flat_weights, slot_out, top_k, config):
    """(grid, args, kwargs) of the down grouped GEMM (one row of slot_out per routed slot)."""
    grid = (expert_ids.shape[0], tk.cdiv(w_down.shape[1], config["BN"]))
    kwargs = dict(BM=config["BM"], BN=config["BN"], BK=config["BK"], STAGES=config["num_stages"],
                  ACC=_acc(inter.dtype), num_warps=config["num_warps"])
    return grid, (inter, w_down, sorted_ids, expert_ids, num_padded, flat_weights, slot_out, top_k), kwargs


def _combine(slot_out, out, top_k, backend):
    """out[t] = sum_j slot_out[t * top_k + j] in j order (rows of any width)."""
    rows, width = out.shape
    combine_bn = clamp_pow2(width, 16, 256)
    moe_combine_kernel[(tk.cdiv(rows, 4), tk.cdiv(width, combine_bn))](
        slot_out, out, top_k, BT=4, BN=combine_bn, ACC=_acc(out.dtype), num_warps=4, backend=backend)


def _fused_configs(spec, dtype, device, backend):
    return (gemm_config(spec, dtype, device, backend, KERNEL_IDS["gate_up"]),
            gemm_config(spec, dtype, device, backend, KERNEL_IDS["down"]))


@torch.library.custom_op("tilekit::fused_moe", mutates_args=())
def fused_moe_op(x: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor, weights: torch.Tensor,
                 ids: torch.Tensor, activation: str) -> torch.Tensor:
    _check_fused_args(x, w_gate_up, w_down, weights, ids, activation)
    tokens, hidden = x.shape
    num_experts, two_f, _ = w_gate_up.shape
    ffn, top_k = two_f // 2, ids.shape[1]
    y = torch.empty(tokens, hidden, dtype=x.dtype, device=x.device)
    if tokens == 0 or top_k == 0:
        return y.zero_()
    backend = backend_for(x.device)
    gate_up_cfg, down_cfg = _fused_configs((tokens, hidden, ffn, num_experts, top_k), x.dtype, x.device, backend)
    sorted_ids, expert_ids, num_padded = torch.ops.tilekit.moe_align(ids, num_experts, gate_up_cfg["BM"])
    inter = torch.empty(tokens * top_k, ffn, dtype=x.dtype, device=x.device)  # slot order, F wide (not 2F)
    grid, args, kwargs = gate_up_launch_args(x, w_gate_up, sorted_ids, expert_ids, num_padded, inter, top_k,
                                             activation, gate_up_cfg)
    moe_gate_up_kernel[grid](*args, backend=backend, **kwargs)
    if down_cfg["BM"] != gate_up_cfg["BM"]:
        # each GEMM runs the BLOCK_M it was tuned with: the slot-order intermediate allows it, for one more
        # (cheap) alignment
        sorted_ids, expert_ids, num_padded = torch.ops.tilekit.moe_align(ids, num_experts, down_cfg["BM"])
    slot_out = torch.empty(tokens * top_k, hidden, dtype=_wide(x.dtype), device=x.device)
    grid, args, kwargs = down_launch_args(inter, w_down, sorted_ids, expert_ids, num_padded, weights.reshape(-1),
                                          slot_out, top_k, down_cfg)
    moe_down_kernel[grid](*args, backend=backend, **kwargs)
    _combine(slot_out, y, top_k, backend)
    return y


@fused_moe_op.register_fake
def _fused_moe_fake(x, w_gate_up, w_down, weights, ids, activation):
    _check_fused_args(x, w_gate_up, w_down, weights, ids, activation)
    return x.new_empty(x.shape)


# ---- fused_moe (backward) ---------------------------------------------------------------------------

def default_backward_configs(spec, dtype, device, target=None):
    """The backward kernels' defaults at SPEC (T, H, F, E, top_k): (fused_moe.bwd_gate_up, .bwd_dw_gate_up,
    .bwd_dw_down). bwd_gate_up's BM is the backward's alignment block, the forward gate_up default's BM
    (few tokens per expert: 16). The gate_up backward holds three BM x BN accumulators: at BM=64 on sm_80,
    BN=64 BK=32 needs 255 registers and an 8-byte stack frame (8 warps, or BN=32 BK=64: 255 registers, no
    frame), so sm_80 takes BN=32 BK=32 there (154 registers, no frame). `target` names an AOT architecture
    (`tilekit compile --target`); without it, the device's."""
    block_m = default_gemm_config(spec, dtype, device)["BM"]
    if torch.device(device).type == "cpu":
        return ({"BM": block_m, "BN": 32, "BK": 32, "num_warps": 4, "num_stages": 1},
                {"BR": 32, "BC": 32, "num_warps": 4, "num_stages": 1},
                {"BR": 32, "BC": 32, "num_warps": 4, "num_stages": 1})
    narrow = gpu_arch_family(device, target) == "sm_80" and block_m >= 64
    weight_grad = {"BR": 64, "BC": 64, "num_warps": 4, "num_stages": 2}
    return ({"BM": block_m, "BN": 32 if narrow else 64, "BK": 32, "num_warps": 4, "num_stages": 2}, weight_grad,
            dict(weight_grad))


def backward_configs(spec, dtype, device, backend):
    """The backward kernels' configs at SPEC: each the provider's (a tuned table) if valid, else its default."""
    defaults = default_backward_configs(spec, dtype, device)
    size = elem_bytes(dtype)
    return tuple(provided_config(KERNEL_IDS[name], spec, dtype, device, backend, tunables, size) or default
                 for name, tunables, default in zip(("bwd_gate_up", "bwd_dw_gate_up", "bwd_dw_down"),
                                                    (BACKWARD_GEMM_TUNABLES, WEIGHT_GRAD_TUNABLES,
                                                     WEIGHT_GRAD_TUNABLES), defaults))


def gate_up_backward_launch_args(x, w_gate_up, w_down, grad_y, sorted_ids, expert_ids, num_padded, flat_weights,
                                 inter, grad_gate_up, parts, top_k, activation, config, needs=(True, True, True)):
    """(grid, args, kwargs) of moe_gate_up_backward_kernel; config["BM"] is the alignment's block_m. needs =
    (d[gate, up], h, d(weights) partials): what the requested gradients use."""
    ffn = w_gate_up.shape[1] // 2
    grid = (expert_ids.shape[0], tk.cdiv(ffn, config["BN"]))
    kwargs = dict(BM=config["BM"], BN=config["BN"], BK=config["BK"], GELU=activation == "gelu",
                  STAGES=config["num_stages"], ACC=_acc(x.dtype), num_warps=config["num_warps"],
                  NEED_GRAD_GATE_UP=bool(needs[0]), NEED_H=bool(needs[1]), NEED_WEIGHT_GRAD=bool(needs[2]))
    return grid, (x, w_gate_up, w_down, grad_y, sorted_ids, expert_ids, num_padded, flat_weights, inter,
                  grad_gate_up, parts, top_k), kwargs


def weight_grad_launch_args(a, b, sorted_ids, starts, flat_weights, out, top_k, block_m, by_token, config):
    """(grid, args, kwargs) of moe_weight_grad_kernel: out[e] = sum over e's slots of a[s]^T b[s] (dW_down with
    by_token: a = dy at the token, times the routing weight; else dW_gate_up)."""
    num_experts, rows, cols = out.shape
    grid = (num_experts, tk.cdiv(rows, config["BR"]), tk.cdiv(cols, config["BC"]))
    kwargs = dict(BM=block_m, BR=config["BR"], BC=config["BC"], A_BY_TOKEN=bool(by_token), SCALE_A=bool(by_token),
                  STAGES=config["num_stages"], ACC=_acc(out.dtype), num_warps=config["num_warps"])
    return grid, (a, b, sorted_ids, starts, flat_weights, out, top_k), kwargs


def expert_starts(expert_ids, num_padded, num_experts, block_m, backend):
    """(E + 1,) int32: the first M-block of every expert, then the number of used blocks."""
    starts = torch.empty(num_experts + 1, dtype=torch.int32, device=expert_ids.device)
    moe_expert_starts_kernel[(1,)](expert_ids, num_padded, starts, BS=64, EP=next_pow2(num_experts + 1),
                                   BLOCK_M=block_m, num_warps=4, backend=backend)
    return starts


@torch.library.custom_op("tilekit::fused_moe_backward", mutates_args=())
def fused_moe_backward_op(grad_y: torch.Tensor, x: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor,
                          weights: torch.Tensor, ids: torch.Tensor, activation: str, need_x: bool = True,
                          need_w_gate_up: bool = True, need_w_down: bool = True, need_weights: bool = True
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dw_gate_up, dw_down, d(weights)); a gradient not asked for (need_* False) is an empty (0,) tensor
    and costs nothing. Kernels: the alignment again; one grouped GEMM pass per M-block that recomputes
    gate/up and forms the down GEMM's input gradient (d gate, d up, h and the d(weights) partials, each only
    if used); the forward's down kernel with W_gate_up transposed for dx's per-slot rows, then the combine;
    a per-expert grouped GEMM over the M-blocks for dW_gate_up and dW_down. No atomics."""
    _check_fused_args(x, w_gate_up, w_down, weights, ids, activation)
    tokens, hidden = x.shape
    num_experts, two_f, _ = w_gate_up.shape
    ffn, top_k = two_f // 2, ids.shape[1]
    device, wide = x.device, _wide(x.dtype)

    def grad_like(t, needed):
        return torch.zeros(t.shape, dtype=t.dtype, device=device) if needed else t.new_empty((0,))

    grad_x = grad_like(x, need_x)
    grad_w_gate_up = grad_like(w_gate_up, need_w_gate_up)
    grad_w_down = grad_like(w_down, need_w_down)
    grad_weights = grad_like(weights, need_weights)
    if tokens == 0 or top_k == 0 or not (need_x or need_w_gate_up or need_w_down or need_weights):
        return grad_x, grad_w_gate_up, grad_w_down, grad_weights
    backend = backend_for(device)
    spec = (tokens, hidden, ffn, num_experts, top_k)
    bwd_cfg, dw_gate_up_cfg, dw_down_cfg = backward_configs(spec, x.dtype, device, backend)
    block_m = bwd_cfg["BM"]  # every backward kernel walks this one alignment
    down_cfg = {**gemm_config(spec, x.dtype, device, backend, KERNEL_IDS["down"]), "BM": block_m}
    sorted_ids, expert_ids, num_padded = torch.ops.tilekit.moe_align(ids, num_experts, block_m)
    num_slots = tokens * top_k
    flat_weights = weights.reshape(-1)
    f_blocks = tk.cdiv(ffn, bwd_cfg["BN"])
    need_grad_gate_up = need_x or need_w_gate_up
    # what the gate_up backward does not store is never allocated either (a 1-element stand-in)
    inter = torch.empty((num_slots, ffn) if need_w_down else (1, 1), dtype=x.dtype, device=device)
    grad_gate_up = torch.empty((num_slots, two_f) if need_grad_gate_up else (1, 1), dtype=x.dtype, device=device)
    parts = torch.empty((num_slots, f_blocks) if need_weights else (1, 1), dtype=wide, device=device)
    grid, args, kwargs = gate_up_backward_launch_args(
        x, w_gate_up, w_down, grad_y, sorted_ids, expert_ids, num_padded, flat_weights, inter, grad_gate_up, parts,
        top_k, activation, bwd_cfg, needs=(need_grad_gate_up, need_w_down, need_weights))
    moe_gate_up_backward_kernel[grid](*args, backend=backend, **kwargs)
    if need_weights:
        # d(weights)[s] = the F blocks' partials of slot s, summed in block order
        _combine(parts.view(num_slots * f_blocks, 1), grad_weights.view(num_slots, 1), f_blocks, backend)
    if need_x:
        # dx: the down kernel with W_gate_up^T (E, H, 2F), read in place, and unit weights; then the combine
        slot_grad_x = torch.empty(num_slots, hidden, dtype=wide, device=device)
        grid, args, kwargs = down_launch_args(grad_gate_up, w_gate_up.transpose(1, 2), sorted_ids, expert_ids,
                                              num_padded, torch.ones(num_slots, dtype=wide, device=device),
                                              slot_grad_x, top_k, down_cfg)
        moe_down_kernel[grid](*args, backend=backend, **kwargs)
        _combine(slot_grad_x, grad_x, top_k, backend)
    if need_w_gate_up or need_w_down:
        starts = expert_starts(expert_ids, num_padded, num_experts, block_m, backend)
    if need_w_gate_up:
        grid, args, kwargs = weight_grad_launch_args(grad_gate_up, x, sorted_ids, starts, flat_weights,
                                                     grad_w_gate_up, top_k, block_m, False, dw_gate_up_cfg)
        moe_weight_grad_kernel[grid](*args, backend=backend, **kwargs)
    if need_w_down:
        grid, args, kwargs = weight_grad_launch_args(grad_y, inter, sorted_ids, starts, flat_weights, grad_w_down,
                                                     top_k, block_m, True, dw_down_cfg)
        moe_weight_grad_kernel[grid](*args, backend=backend, **kwargs)
    return grad_x, grad_w_gate_up, grad_w_down, grad_weights


@fused_moe_backward_op.register_fake
def _fused_moe_backward_fake(grad_y, x, w_gate_up, w_down, weights, ids, activation, need_x=True,
                             need_w_gate_up=True, need_w_down=True, need_weights=True):
    _check_fused_args(x, w_gate_up, w_down, weights, ids, activation)
    return tuple(t.new_empty(t.shape if needed else (0,)) for t, needed in
                 ((x, need_x), (w_gate_up, need_w_gate_up), (w_down, need_w_down), (weights, need_weights)))


def _fused_setup_context(ctx, inputs, output):
    x, w_gate_up, w_down, weights, ids, activation = inputs
    ctx.save_for_backward(x, w_gate_up, w_down, weights, ids)
    ctx.activation = activation


def _fused_backward(ctx, grad_y):
    x, w_gate_up, w_down, weights, ids = ctx.saved_tensors
    needs = [bool(n) for n in ctx.needs_input_grad[:4]]
    grads = torch.ops.tilekit.fused_moe_backward(grad_y.contiguous(), x, w_gate_up, w_down, weights, ids,
                                                 ctx.activation, *needs)
    return (*(g if needed else None for g, needed in zip(grads, needs)), None, None)


fused_moe_op.register_autograd(_fused_backward, setup_context=_fused_setup_context)


def fused_moe(x, w_gate_up, w_down, weights, ids, *, activation="silu"):
    """y = sum_j weights[t, j] W_down[e] (act(W_gate[e] x) * W_up[e] x), e = ids[t, j] (DESIGN.md, MoE), with
    autograd for x, w_gate_up, w_down and weights."""
    return torch.ops.tilekit.fused_moe(x, w_gate_up, w_down, weights, ids, activation)


def fused_moe_reference(x, w_gate_up, w_down, weights, ids, *, activation="silu"):
    """The eager loop-over-experts oracle, accumulating in fp32 (float64 for float64)."""
    wide = torch.float64 if x.dtype == torch.float64 else torch.float32
    ffn = w_gate_up.shape[1] // 2
    y = torch.zeros(x.shape, dtype=wide, device=x.device)
    for e in range(w_gate_up.shape[0]):
        token, slot = torch.nonzero(ids == e, as_tuple=True)
        if token.numel() == 0:
            continue
        h = x[token].to(wide) @ w_gate_up[e].to(wide).T
        gate, up = h[:, :ffn], h[:, ffn:]
        act = torch.nn.functional.silu(gate) if activation == "silu" else torch.nn.functional.gelu(gate, approximate="tanh")
        out = (act * up) @ w_down[e].to(wide).T
        y.index_add_(0, token, out * weights[token, slot].to(wide)[:, None])
    return y.to(x.dtype)


def kernel_example(shape=(4096, 4096, 14336, 8, 2), dtype=torch.float16, device=torch.device("cuda"), target=None):
    """(kernel, example args, launch kwargs) for moe_route at SPEC (T, H, F, E, top_k): what `tilekit
    show/compile` use. Tensors are on the meta device."""
    tokens, _, _, num_experts, top_k = shape
    logits = torch.empty(tokens, num_experts, dtype=torch.float32, device="meta")
    weights = torch.empty(tokens, top_k, dtype=torch.float32, device="meta")
    ids = torch.empty(tokens, top_k, dtype=torch.int32, device="meta")
    device = torch.device(device)
    config = _route_config(tokens, num_experts, device, "reference" if device.type == "cpu" else "triton",
                           KERNEL_IDS["route"])
    _, args, kwargs = route_launch_args(logits, None, weights, ids, top_k, "softmax", True, 0, 0, 1.0, config)
    return moe_route_kernel, args, kwargs


def gate_up_example(shape=(4096, 4096, 14336, 8, 2), dtype=torch.float16, device=torch.device("cuda"), target=None):
    """(kernel, example args, launch kwargs) of fused_moe's gate_up grouped GEMM at SPEC (T, H, F, E, top_k),
    with the alignment's static lengths: fused_moe's main forward kernel for `tilekit show/compile`. ``target``
    is accepted and ignored: the forward GEMMs have one default for every GPU."""
    tokens, hidden, ffn, num_experts, top_k = shape
    device = torch.device(device)
    backend = "reference" if device.type == "cpu" else "triton"
    config = gemm_config(shape, dtype, device, backend, KERNEL_IDS["gate_up"])
    length, num_m_blocks = align_lengths(tokens * top_k, num_experts, config["BM"])
    meta = dict(device="meta")
    _, args, kwargs = gate_up_launch_args(
        torch.empty(tokens, hidden, dtype=dtype, **meta), torch.empty(num_experts, 2 * ffn, hidden, dtype=dtype, **meta),
        torch.empty(length, dtype=torch.int32, **meta), torch.empty(num_m_blocks, dtype=torch.int32, **meta),
        torch.empty(1, dtype=torch.int32, **meta), torch.empty(tokens * top_k, ffn, dtype=dtype, **meta), top_k,
        "silu", config)
    return moe_gate_up_kernel, args, kwargs


def moe_layer(x, router_weight, w_gate_up, w_down, top_k, *, activation="silu", **moe_route_kwargs):
    """The routed part of an MoE layer: logits = x @ router_weight.T in fp32 (tilekit::matmul), moe_route,
    fused_moe. Differentiable end to end: the router gets its gradient through moe_route's weights."""
    check_tensor("moe_layer", "router_weight", router_weight, ranks=(2,))
    if router_weight.shape[1] != x.shape[-1]:
        raise ValueError(f"tilekit::moe_layer: 'router_weight' is {tuple(router_weight.shape)}; expected "
                         f"(E, {x.shape[-1]})")
    logits = torch.ops.tilekit.matmul(x.float(), router_weight.float().T)
    weights, ids = moe_route(logits, top_k, **moe_route_kwargs)
    return fused_moe(x, w_gate_up, w_down, weights, ids, activation=activation)


def backward_example(kind, shape=(4096, 4096, 14336, 8, 2), dtype=torch.float16, device=torch.device("cuda"),
                     target=None):
    """(kernel, example args, launch kwargs) of a fused_moe backward kernel at SPEC (T, H, F, E, top_k), with
    the GPU defaults of `target`'s architecture (the device's without it): kind "gate_up"
    (moe_gate_up_backward_kernel), "dw_gate_up" or "dw_down" (moe_weight_grad_kernel). Tensors are on the
    meta device (for AOT compiles), built by the launch-args functions the op uses."""
    tokens, hidden, ffn, num_experts, top_k = shape
    bwd_cfg, dw_gate_up_cfg, dw_down_cfg = default_backward_configs(shape, dtype, torch.device(device), target)
    block_m = bwd_cfg["BM"]
    length, num_m_blocks = align_lengths(tokens * top_k, num_experts, block_m)
    slots = tokens * top_k

    def meta(*size, dt=dtype):
        return torch.empty(*size, dtype=dt, device="meta")

    i32 = torch.int32
    sorted_ids, weights = meta(length, dt=i32), meta(slots, dt=torch.float32)
    if kind == "gate_up":
        _, args, kwargs = gate_up_backward_launch_args(
            meta(tokens, hidden), meta(num_experts, 2 * ffn, hidden), meta(num_experts, hidden, ffn),
            meta(tokens, hidden), sorted_ids, meta(num_m_blocks, dt=i32), meta(1, dt=i32), weights, meta(slots, ffn),
            meta(slots, 2 * ffn), meta(slots, tk.cdiv(ffn, bwd_cfg["BN"]), dt=torch.float32), top_k, "silu", bwd_cfg)
        return moe_gate_up_backward_kernel, args, kwargs
    starts = meta(num_experts + 1, dt=i32)
    if kind == "dw_gate_up":
        _, args, kwargs = weight_grad_launch_args(meta(slots, 2 * ffn), meta(tokens, hidden), sorted_ids, starts,
                                                  weights, meta(num_experts, 2 * ffn, hidden), top_k, block_m, False,
                                                  dw_gate_up_cfg)
    elif kind == "dw_down":
        _, args, kwargs = weight_grad_launch_args(meta(tokens, hidden), meta(slots, ffn), sorted_ids, starts,
                                                  weights, meta(num_experts, hidden, ffn), top_k, block_m, True,
                                                  dw_down_cfg)
    else:
        raise ValueError(f"backward_example: 'kind' must be gate_up, dw_gate_up or dw_down, got {kind!r}")
    return moe_weight_grad_kernel, args, kwargs
