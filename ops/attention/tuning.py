"""attention's tuning declarations: shape tuple ``B,Hq,Hkv,Sq,Skv,D``, flags ``causal=1`` and ``window=L:R``.
A job's flags reach the trial kernel, its inputs and its reference, and the op looks its configs up with the
call's flags (``op.tuning_flags``): a causal call never takes a config tuned on the non-causal kernel."""
import math

import torch

from ...autotune.protocol import TuneKernel, register
from . import decode, op
from .tolerances import PROPERTY as ATTENTION_PROPERTY
from .kernels import (attention_bwd_dkdv_kernel, attention_bwd_dq_kernel, attention_fwd_kernel,
                      attention_varlen_bwd_dkdv_kernel, attention_varlen_bwd_dq_kernel, attention_varlen_fwd_kernel)

SHAPE_NAMES = ("B", "Hq", "Hkv", "Sq", "Skv", "D")
# Llama-3-8B prefill (GQA 32/8, D=128), a D=64 model, and Llama-3-8B single-token decode shapes.
DEFAULT_SHAPES = {"gpu": [(1, 32, 8, 4096, 4096, 128), (4, 16, 16, 2048, 2048, 64), (16, 32, 8, 1, 4096, 128)],
                  "cpu": [(1, 4, 2, 256, 256, 64), (1, 4, 4, 128, 128, 128)]}



def make_forward_inputs(shape, dtype, generator, *, flags):
    B, Hq, Hkv, Sq, Skv, D = shape
    return tuple(torch.randn(b, h, s, D, generator=generator).to(dtype)
                 for b, h, s in ((B, Hq, Sq), (B, Hkv, Skv), (B, Hkv, Skv)))


def _with_bd(config, D):
    return {**config, "BD": max(16, op.next_pow2(D))}


def _bounds(flags, q, k):
    return op.window_bounds(*op.parse_tuning_flags(flags), q.shape[2], k.shape[2])


def forward_launch_args(inputs, out, config, *, flags):
    q, k, v = inputs[:3]
    D = q.shape[3]
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    left, right = _bounds(flags, q, k)
    return op.fwd_launch_args(q, k, v, out, lse, _with_bd(config, D), 1 / math.sqrt(D), None, left, right)


def _reference(q, k, v, flags, **kw):
    causal, window = op.parse_tuning_flags(flags)
    return op.attention_reference(q, k, v, causal=causal, window=window, **kw)


def forward_reference(q, k, v, *, flags):
    return _reference(q, k, v, flags)


def make_backward_inputs(shape, dtype, generator, *, flags):
    q, k, v = make_forward_inputs(shape, dtype, generator, flags=flags)
    do = torch.randn(q.shape, generator=generator).to(dtype)
    o, lse = _reference(q, k, v, flags, return_lse=True)
    delta = (o.float() * do.float()).sum(-1)
    return q, k, v, do, lse.float(), delta


def _bwd_kwargs(q, config):
    return dict(SOFTCAP=False, BM=config["BM"], BN=config["BN"], BD=config["BD"], ACC=op._acc(q.dtype),
                num_warps=config["num_warps"], num_stages=config["num_stages"])


def dkdv_launch_args(inputs, out, config, *, flags):
    q, k, v, do, lse, delta = inputs
    config = _with_bd(config, q.shape[3])
    left, right = _bounds(flags, q, k)
    dv = torch.empty_like(v)
    grid = (-(-k.shape[2] // config["BN"]), k.shape[0] * k.shape[1])
    return grid, (q, k, v, do, lse, delta, out, dv, 1 / math.sqrt(q.shape[3]), 1.0, left, right), _bwd_kwargs(q, config)


def dq_launch_args(inputs, out, config, *, flags):
    q, k, v, do, lse, delta = inputs
    config = _with_bd(config, q.shape[3])
    left, right = _bounds(flags, q, k)
    grid = (-(-q.shape[2] // config["BM"]), q.shape[0] * q.shape[1])
    return grid, (q, k, v, do, lse, delta, out, 1 / math.sqrt(q.shape[3]), 1.0, left, right), _bwd_kwargs(q, config)


def _reference_grads(q, k, v, do, flags):
    wide = [t.detach().double().requires_grad_() for t in (q, k, v)]
    out = _reference(*wide, flags)
    return torch.autograd.grad(out, wide, do.double())


def dkdv_reference(q, k, v, do, lse, delta, *, flags):
    return _reference_grads(q, k, v, do, flags)[1].to(k.dtype)


def dq_reference(q, k, v, do, lse, delta, *, flags):
    return _reference_grads(q, k, v, do, flags)[0].to(q.dtype)


def _default_for(kernel):
    def default(shape, dtype, device, *, flags):
        return {k: v for k, v in op._default_config(shape, dtype, device, kernel).items() if k != "BD"}
    return default


FORWARD = register(TuneKernel(
    id="attention.fwd", kernel=attention_fwd_kernel, shape_names=SHAPE_NAMES, flags=("causal", "window"),
    make_inputs=make_forward_inputs, make_output=lambda inputs: torch.empty_like(inputs[0]),
    launch_args=forward_launch_args, reference=forward_reference, default_config=_default_for("fwd"),
    default_shapes=DEFAULT_SHAPES,
))
BACKWARD_DKDV = register(TuneKernel(
    id="attention.bwd_dkdv", kernel=attention_bwd_dkdv_kernel, shape_names=SHAPE_NAMES, flags=("causal", "window"),
    make_inputs=make_backward_inputs, make_output=lambda inputs: torch.empty_like(inputs[1]),
    launch_args=dkdv_launch_args, reference=dkdv_reference, default_config=_default_for("dkdv"),
    default_shapes=DEFAULT_SHAPES,
))
BACKWARD_DQ = register(TuneKernel(
    id="attention.bwd_dq", kernel=attention_bwd_dq_kernel, shape_names=SHAPE_NAMES, flags=("causal", "window"),
    make_inputs=make_backward_inputs, make_output=lambda inputs: torch.empty_like(inputs[0]),
    launch_args=dq_launch_args, reference=dq_reference, default_config=_default_for("dq"),
    default_shapes=DEFAULT_SHAPES,
))


# ---- paged decode (split-KV) and the split combine ----------------------------------------------------
# The decode SPEC is the same tuple with Sq = 1 and Skv the context (the cache has 16-token pages); only the
# window flag applies (a decode query is the newest token, so it is causal by nature).
DECODE_PAGE = 16
DECODE_SHAPES = {"gpu": [(16, 32, 8, 1, 4096, 128), (64, 32, 8, 1, 8192, 128), (16, 32, 8, 1, 4096, 64)],
                 "cpu": [(2, 4, 2, 1, 256, 64)]}
MAX_SPLITS = max(decode.SPLIT_CANDIDATES)


def _decode_window_left(flags):
    _, window = op.parse_tuning_flags(flags)
    return -1 if window is None else int(window[0])


def make_decode_inputs(shape, dtype, generator, *, flags):
    """q, a shuffled paged cache holding every sequence, the block table, ragged seq_lens (the first at the
    full context) and a one-element box the launch writes its split count into, so the reference splits the
    keys the same way."""
    B, Hq, Hkv, _, Skv, D = shape
    pages = -(-Skv // DECODE_PAGE)
    k_cache = torch.randn(B * pages, DECODE_PAGE, Hkv, D, generator=generator).to(dtype)
    v_cache = torch.randn(B * pages, DECODE_PAGE, Hkv, D, generator=generator).to(dtype)
    table = torch.randperm(B * pages, generator=generator).to(torch.int32).reshape(B, pages)
    seq_lens = torch.randint(max(1, Skv // 2), Skv + 1, (B,), generator=generator, dtype=torch.int32)
    seq_lens[0] = Skv
    q = torch.randn(B, Hq, D, generator=generator).to(dtype)
    return q, k_cache, v_cache, table, seq_lens, torch.zeros(1, dtype=torch.int32)


def _decode_output(inputs):
    q = inputs[0]
    return torch.empty(q.shape[0], q.shape[1], MAX_SPLITS, q.shape[2], dtype=torch.float32)


def decode_launch_args(inputs, out, config, *, flags):
    q, k_cache, v_cache, table, seq_lens, split_box = inputs
    splits = max(1, min(config["num_splits"], table.shape[1]))
    split_box.fill_(splits)
    out[:, :, splits:].zero_()  # splits the launch does not have: the reference gives 0 there too
    l_part = torch.empty(q.shape[0], q.shape[1], splits, dtype=torch.float32, device=q.device)
    left = _decode_window_left(flags)
    return decode.decode_launch_args(q, k_cache, v_cache, table, seq_lens, out[:, :, :splits], l_part, config,
                                     1 / math.sqrt(q.shape[2]), None, (1 << 30) if left < 0 else left)


def decode_reference(q, k_cache, v_cache, table, seq_lens, split_box, *, flags):
    """Each split's partial output: softmax over the split's pages (visible keys only) times V, 0 when the
    split holds no visible key; float64."""
    B, Hq, D = q.shape
    _, page, Hkv, _ = k_cache.shape
    pages = table.shape[1]
    splits = int(split_box[0])
    per_split = -(-pages // splits)
    keys = k_cache[table.long()].reshape(B, pages * page, Hkv, D).double().repeat_interleave(Hq // Hkv, dim=2)
    values = v_cache[table.long()].reshape(B, pages * page, Hkv, D).double().repeat_interleave(Hq // Hkv, dim=2)
    s = torch.einsum("bhd,bjhd->bhj", q.double(), keys) / math.sqrt(D)
    j = torch.arange(pages * page)
    lens = seq_lens.long()[:, None]
    left = _decode_window_left(flags)
    visible = (j[None] < lens) & ((j[None] >= lens - 1 - left) if left >= 0 else True)
    out = torch.zeros(B, Hq, MAX_SPLITS, D, dtype=torch.float64)
    for split in range(splits):
        mine = visible & ((j // page) // per_split == split)[None]
        ss = s.masked_fill(~mine[:, None, :], -float("inf"))
        m = ss.amax(-1, keepdim=True)
        p = torch.exp(ss - torch.where(torch.isinf(m), 0.0, m))
        denom = p.sum(-1, keepdim=True)
        out[:, :, split] = torch.einsum("bhj,bjhd->bhd", p / torch.where(denom == 0, 1.0, denom), values)
    return out


def make_combine_inputs(shape, dtype, generator):
    """Partial outputs and lse of the decode default's split count (at least 2); some splits empty (-inf)."""
    B, Hq, Hkv, _, Skv, D = shape
    splits = max(2, decode.choose_num_splits(B, Hkv, -(-Skv // DECODE_PAGE)))
    o_part = torch.randn(B, Hq, splits, D, generator=generator)
    l_part = torch.randn(B, Hq, splits, generator=generator) * 3
    l_part[:, :, -1] = torch.where(torch.rand(B, Hq, generator=generator) < 0.3, -float("inf"), l_part[:, :, -1])
    o_part[:, :, -1][torch.isinf(l_part[:, :, -1])] = 0.0
    return o_part, l_part, torch.empty(0, dtype=dtype)  # the last input only carries the output dtype


def combine_launch_args(inputs, out, config):
    o_part, l_part, _ = inputs
    lse = torch.empty(o_part.shape[:2], dtype=torch.float32, device=o_part.device)
    return decode.combine_launch_args(o_part, l_part, out, lse, config)


def combine_reference(o_part, l_part, like):
    lse = torch.logsumexp(l_part.double(), dim=-1, keepdim=True)
    w = torch.exp(l_part.double() - torch.where(torch.isinf(lse), 0.0, lse))
    return (w[..., None] * o_part.double()).sum(2).to(like.dtype)


DECODE = register(TuneKernel(
    id=decode.DECODE_ID, kernel=decode.attention_decode_kernel, shape_names=SHAPE_NAMES, flags=("window",),
    make_inputs=make_decode_inputs, make_output=_decode_output, launch_args=decode_launch_args,
    reference=decode_reference,
    default_config=lambda shape, dtype, device, *, flags: decode.decode_default_config(shape, dtype, device),
    default_shapes=DECODE_SHAPES, tolerances=ATTENTION_PROPERTY,
))
COMBINE = register(TuneKernel(
    id=decode.COMBINE_ID, kernel=decode.attention_combine_kernel, shape_names=SHAPE_NAMES,
    make_inputs=make_combine_inputs,
    make_output=lambda inputs: torch.empty(inputs[0].shape[0], inputs[0].shape[1], inputs[0].shape[3],
                                           dtype=inputs[2].dtype),
    launch_args=combine_launch_args, reference=combine_reference,
    default_config=lambda shape, dtype, device: {"num_warps": 4}, default_shapes=DECODE_SHAPES,
    tolerances=ATTENTION_PROPERTY,
))


# ---- varlen (packed sequences) ----------------------------------------------------------------------------
# Their own entries (op.VARLEN_KERNEL_IDS): SPEC B,Hq,Hkv,Sq,Skv,D read as B sequences of at most Sq queries and
# Skv keys (max_seqlen_q, max_seqlen_k), the dense flags. The inputs are ragged: the first sequence at the
# maximum, the others between half of it and it (the keys as long as the queries when Sq == Skv, as in prefill).
VARLEN_SHAPES = {"gpu": [(8, 32, 8, 4096, 4096, 128), (16, 16, 16, 2048, 2048, 64)],
                 "cpu": [(3, 4, 2, 96, 96, 64)]}


def _ragged_lengths(batch, longest, generator):
    lens = torch.randint(max(1, longest // 2), longest + 1, (batch,), generator=generator)
    lens[0] = longest
    return lens


def _cu(lens):
    return torch.cat([torch.zeros(1, dtype=torch.int64), lens.cumsum(0)]).to(torch.int32)


def make_varlen_inputs(shape, dtype, generator, *, flags):
    """q (total_q, Hq, D), k, v (total_k, Hkv, D), cu_seqlens_q/k, and an empty (max_seqlen_q, max_seqlen_k, 0)
    tensor that carries the two maxima by its shape (launch_args sees meta tensors when the tuner prunes)."""
    B, Hq, Hkv, Sq, Skv, D = shape
    q_lens = _ragged_lengths(B, Sq, generator)
    k_lens = q_lens.clone() if Sq == Skv else _ragged_lengths(B, Skv, generator)
    total_q, total_k = int(q_lens.sum()), int(k_lens.sum())
    q = torch.randn(total_q, Hq, D, generator=generator).to(dtype)
    k, v = (torch.randn(total_k, Hkv, D, generator=generator).to(dtype) for _ in range(2))
    return q, k, v, _cu(q_lens), _cu(k_lens), torch.empty(Sq, Skv, 0)


def _varlen_bounds(flags, maxima):
    return op.window_bounds(*op.parse_tuning_flags(flags), maxima.shape[0], maxima.shape[1])


def varlen_fwd_launch_args(inputs, out, config, *, flags):
    q, k, v, cu_q, cu_k, maxima = inputs
    lse = torch.empty(q.shape[1], q.shape[0], dtype=torch.float32, device=q.device)
    left, right = _varlen_bounds(flags, maxima)
    return op.varlen_fwd_launch_args(q, k, v, out, lse, cu_q, cu_k, maxima.shape[0], _with_bd(config, q.shape[2]),
                                     1 / math.sqrt(q.shape[2]), None, left, right)


def _per_sequence(cu_q, cu_k):
    """(query slice, key slice) of each packed sequence."""
    return [(slice(int(cu_q[i]), int(cu_q[i + 1])), slice(int(cu_k[i]), int(cu_k[i + 1])))
            for i in range(cu_q.shape[0] - 1)]


def _varlen_reference(q, k, v, cu_q, cu_k, flags, return_lse=False):
    """Each sequence alone through the dense reference (B=1), packed back: o (total_q, Hq, D) and lse
    (Hq, total_q)."""
    causal, window = op.parse_tuning_flags(flags)
    o = torch.zeros(q.shape, dtype=torch.float64 if q.dtype == torch.float64 else q.dtype)
    lse = torch.full((q.shape[1], q.shape[0]), -float("inf"), dtype=torch.float64)
    for rows, keys in _per_sequence(cu_q, cu_k):
        if rows.stop == rows.start:
            continue
        dense = lambda t, s: t[s].permute(1, 0, 2)[None]
        if keys.stop > keys.start:
            oi, li = op.attention_reference(dense(q, rows), dense(k, keys), dense(v, keys), causal=causal, window=window,
                                            return_lse=True)
            o[rows] = oi[0].permute(1, 0, 2).to(o.dtype)
            lse[:, rows] = li[0].double()
    return (o, lse) if return_lse else o


def varlen_fwd_reference(q, k, v, cu_q, cu_k, maxima, *, flags):
    return _varlen_reference(q.double(), k.double(), v.double(), cu_q, cu_k, flags)


def make_varlen_backward_inputs(shape, dtype, generator, *, flags):
    q, k, v, cu_q, cu_k, maxima = make_varlen_inputs(shape, dtype, generator, flags=flags)
    do = torch.randn(q.shape, generator=generator).to(dtype)
    o, lse = _varlen_reference(q.double(), k.double(), v.double(), cu_q, cu_k, flags, return_lse=True)
    delta = (o * do.double()).sum(-1).T.contiguous()
    return q, k, v, do, lse.float(), delta.float(), cu_q, cu_k, maxima


def varlen_dkdv_launch_args(inputs, out, config, *, flags):
    q, k, v, do, lse, delta, cu_q, cu_k, maxima = inputs
    left, right = _varlen_bounds(flags, maxima)
    dv = torch.empty_like(v)
    return op.varlen_dkdv_launch_args(q, k, v, do, lse, delta, out, dv, cu_q, cu_k, maxima.shape[1],
                                      _with_bd(config, q.shape[2]), 1 / math.sqrt(q.shape[2]), None, left, right)


def varlen_dq_launch_args(inputs, out, config, *, flags):
    q, k, v, do, lse, delta, cu_q, cu_k, maxima = inputs
    left, right = _varlen_bounds(flags, maxima)
    return op.varlen_dq_launch_args(q, k, v, do, lse, delta, out, cu_q, cu_k, maxima.shape[0],
                                    _with_bd(config, q.shape[2]), 1 / math.sqrt(q.shape[2]), None, left, right)


def _varlen_reference_grads(q, k, v, do, cu_q, cu_k, flags):
    wide = [t.detach().double().requires_grad_() for t in (q, k, v)]
    out = _varlen_reference(*wide, cu_q, cu_k, flags)
    return torch.autograd.grad(out, wide, do.double(), allow_unused=True)


def varlen_dkdv_reference(q, k, v, do, lse, delta, cu_q, cu_k, maxima, *, flags):
    return _varlen_reference_grads(q, k, v, do, cu_q, cu_k, flags)[1].to(k.dtype)


def varlen_dq_reference(q, k, v, do, lse, delta, cu_q, cu_k, maxima, *, flags):
    return _varlen_reference_grads(q, k, v, do, cu_q, cu_k, flags)[0].to(q.dtype)


def _varlen_default_for(kernel):
    def default(shape, dtype, device, *, flags):
        config = op._default_config(shape, dtype, device, kernel, varlen=True)
        return {k: v for k, v in config.items() if k != "BD"}
    return default


VARLEN_FORWARD = register(TuneKernel(
    id=op.VARLEN_KERNEL_IDS["fwd"], kernel=attention_varlen_fwd_kernel, shape_names=SHAPE_NAMES,
    flags=("causal", "window"), make_inputs=make_varlen_inputs, make_output=lambda inputs: torch.empty_like(inputs[0]),
    launch_args=varlen_fwd_launch_args, reference=varlen_fwd_reference, default_config=_varlen_default_for("fwd"),
    default_shapes=VARLEN_SHAPES,
))
VARLEN_BACKWARD_DKDV = register(TuneKernel(
    id=op.VARLEN_KERNEL_IDS["dkdv"], kernel=attention_varlen_bwd_dkdv_kernel, shape_names=SHAPE_NAMES,
    flags=("causal", "window"), make_inputs=make_varlen_backward_inputs,
    make_output=lambda inputs: torch.empty_like(inputs[1]), launch_args=varlen_dkdv_launch_args,
    reference=varlen_dkdv_reference, default_config=_varlen_default_for("dkdv"), default_shapes=VARLEN_SHAPES,
))
VARLEN_BACKWARD_DQ = register(TuneKernel(
    id=op.VARLEN_KERNEL_IDS["dq"], kernel=attention_varlen_bwd_dq_kernel, shape_names=SHAPE_NAMES,
    flags=("causal", "window"), make_inputs=make_varlen_backward_inputs,
    make_output=lambda inputs: torch.empty_like(inputs[0]), launch_args=varlen_dq_launch_args,
    reference=varlen_dq_reference, default_config=_varlen_default_for("dq"), default_shapes=VARLEN_SHAPES,
))
