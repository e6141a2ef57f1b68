"""attention's tuning declarations: shape tuple ``B,Hq,Hkv,Sq,Skv,D``, flags ``causal=1`` and ``window=L:R``.
A job's flags reach the trial kernel, its inputs and its reference, and the op looks its configs up with the
call's flags (``op.tuning_flags``): a causal call never takes a config tuned on the non-causal kernel."""
import math

import torch

from ...autotune.protocol import TuneKernel, register
from . import op
from .kernels import attention_bwd_dkdv_kernel, attention_bwd_dq_kernel, attention_fwd_kernel

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
