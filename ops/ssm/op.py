"""The torch ops of the SSM family: ``tilekit::selective_scan`` (Mamba-1, forward in the DSL).

``selective_scan(u, delta, A, B, C, *, D, z, delta_bias, delta_softplus, initial_state, return_last_state)``
follows mamba_ssm's ``selective_scan_fn`` with a real A (see README.md for the recurrence).
"""
import torch

import tilekit as tk

from ...backends import default_backend
from ..dispatch import backend_for, check_tensor, checked_config, clamp_pow2, elem_bytes, provided_config
from .kernels import (CHECKPOINT_STEPS, MAX_SCAN_VALUES_PER_THREAD, SELECTIVE_SCAN_BWD_TUNABLES,
                      SELECTIVE_SCAN_TUNABLES, selective_scan_bwd_adjoint_kernel, selective_scan_bwd_chunk_kernel,
                      selective_scan_fwd_kernel)

OP_NAME = "selective_scan"
KERNEL_IDS = {"selective_scan_fwd_kernel": "selective_scan.fwd",
              "selective_scan_bwd_chunk_kernel": "selective_scan.bwd"}
MAX_STATE = 256


def _acc(dtype):
    return tk.float64 if dtype == torch.float64 else tk.float32


def _state_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---- configs -------------------------------------------------------------------------------------

def _default_config(shape, dtype, device, backend=None):
    """Config for the shape tuple (Bt, Dm, L, N)."""
    bt, dm, length, n = shape
    bn = clamp_pow2(n, 1, MAX_STATE)
    if backend == "opencl":
        # PoCL unrolls every tile op into C: small tiles keep its compile time (seconds per tile size) in check
        config = {"BD": 4, "BL": 16, "num_warps": 1, "num_stages": 1}
    elif device.type == "cpu":
        # the reference executor and the interpreter pay per program and per loop iteration: long chunks
        bl = clamp_pow2(length, 8, CHECKPOINT_STEPS)
        bd = clamp_pow2(dm, 1, max(1, 32 * 8 * MAX_SCAN_VALUES_PER_THREAD // (max(bn, 16) * bl)))
        config = {"BD": min(bd, 32), "BL": bl, "num_warps": 8, "num_stages": 1}
    else:
        bl = 64 if bn <= 16 else 16
        # (4, 16, 64) compiles to 184 registers on sm_90 and 111 VGPRs on gfx942, no spills; BD 8 nears 255
        bd = max(1, min(4, 32 * 4 * MAX_SCAN_VALUES_PER_THREAD // (bn * bl)))
        config = {"BD": bd, "BL": bl, "num_warps": 4, "num_stages": 1}
    return checked_config(OP_NAME, {**config, "BN": bn}, SELECTIVE_SCAN_TUNABLES, elem_bytes(dtype)) and config


def _default_bwd_config(shape, dtype, device, backend=None):
    """Backward config for (Bt, Dm, L, N); its chunk is always CHECKPOINT_STEPS."""
    bn = clamp_pow2(shape[3], 1, MAX_STATE)
    if backend == "opencl":
        config = {"BD": 2, "num_warps": 1, "num_stages": 1}
    elif device.type == "cpu":
        bd = clamp_pow2(shape[1], 1, max(1, 32 * 8 * MAX_SCAN_VALUES_PER_THREAD // (max(bn, 16) * CHECKPOINT_STEPS)))
        config = {"BD": min(bd, 16), "num_warps": 8, "num_stages": 1}
    else:
        # one channel per program; the second pass also has one program per chunk, so there are plenty.
        # At Mamba-2.8B no spills on sm_80/sm_90/gfx90a/gfx942 (tests/ops/ssm/test_ssm_aot.py); BD 4 spills on sm_90
        config = {"BD": 1, "num_warps": 4, "num_stages": 1}
    return checked_config("selective_scan_backward", {**config, "BN": bn}, SELECTIVE_SCAN_BWD_TUNABLES,
                          elem_bytes(dtype)) and config


def _config_for(shape, dtype, device, backend=None, kernel_id="selective_scan.fwd"):
    backend = backend or default_backend(device)
    tunables, default = ((SELECTIVE_SCAN_TUNABLES, _default_config) if kernel_id == "selective_scan.fwd"
                         else (SELECTIVE_SCAN_BWD_TUNABLES, _default_bwd_config))
    config = (provided_config(kernel_id, shape, dtype, device, backend, tunables, elem_bytes(dtype))
              or default(shape, dtype, device, backend))
    return dict(config)


# ---- B/C as one 4-D (Bt, G, N, L) view ------------------------------------------------------------

def _as_groups(name, x, bt, dm, n, length):
    """``x`` as a (Bt, G, N, L) view and the number of channels per group. Fixed (Dm, N) becomes a
    stride-0 view over batch and time with one group per channel."""
    if x.dim() == 2:
        return x[None, :, :, None].expand(bt, dm, n, length), 1
    if x.dim() == 3:
        return x.unsqueeze(1), max(dm, 1)
    return x, max(dm // x.shape[1], 1)


def _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state):
    check_tensor(OP_NAME, "u", u, ranks=(3,))
    bt, dm, length = u.shape
    check_tensor(OP_NAME, "delta", delta, ranks=(3,))
    check_tensor(OP_NAME, "A", A, ranks=(2,))
    if tuple(delta.shape) != tuple(u.shape):
        raise ValueError(f"tilekit::{OP_NAME}: 'delta' is {tuple(delta.shape)} but 'u' is {tuple(u.shape)}")
    if delta.dtype != u.dtype:
        raise TypeError(f"tilekit::{OP_NAME}: 'delta' is {delta.dtype} but 'u' is {u.dtype}")
    if A.shape[0] != dm:
        raise ValueError(f"tilekit::{OP_NAME}: 'A' must be (Dm, N) = ({dm}, N), got {tuple(A.shape)}")
    n = A.shape[1]
    if n > MAX_STATE:
        raise ValueError(f"tilekit::{OP_NAME}: 'A' has N = {n} states; at most {MAX_STATE} are supported")
    for name, x in (("B", B), ("C", C)):
        check_tensor(OP_NAME, name, x, ranks=(2, 3, 4))
        want = {2: (dm, n), 3: (bt, n, length), 4: (bt, x.shape[1] if x.dim() == 4 else 0, n, length)}[x.dim()]
        if tuple(x.shape) != want:
            raise ValueError(f"tilekit::{OP_NAME}: '{name}' must be (Dm, N), (Bt, N, L) or (Bt, G, N, L); "
                             f"expected {want} here, got {tuple(x.shape)}")
        if x.dim() == 4 and (x.shape[1] == 0 or dm % x.shape[1]):
            raise ValueError(f"tilekit::{OP_NAME}: '{name}' has G = {x.shape[1]} groups, which must divide "
                             f"Dm = {dm}")
    for name, x, shape in (("D", D, (dm,)), ("delta_bias", delta_bias, (dm,)), ("z", z, (bt, dm, length)),
                           ("initial_state", initial_state, (bt, dm, n))):
        if x is None:
            continue
        check_tensor(OP_NAME, name, x)
        if tuple(x.shape) != shape:
            raise ValueError(f"tilekit::{OP_NAME}: '{name}' must be {shape}, got {tuple(x.shape)}")
    for name, x in (("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
                    ("delta_bias", delta_bias), ("initial_state", initial_state)):
        if x is not None and x.device != u.device:
            raise ValueError(f"tilekit::{OP_NAME}: '{name}' is on {x.device} but 'u' is on {u.device}")
    if z is not None and z.dtype != u.dtype:
        raise TypeError(f"tilekit::{OP_NAME}: 'z' is {z.dtype} but 'u' is {u.dtype}")
    return bt, dm, length, n


def launch_args(inputs, out, config, *, D=None, z=None, delta_bias=None, delta_softplus=False,
                initial_state=None, last_state=None, checkpoints=None):
    """(grid, args, kwargs) of the forward kernel; the op and the tuner both launch through this.
    ``inputs`` = (u, delta, A, B, C); missing outputs are allocated here."""
    u, delta, A, B, C = inputs
    bt, dm, length = u.shape
    n = A.shape[1]
    bg, b_group = _as_groups("B", B, bt, dm, n, length)
    cg, c_group = _as_groups("C", C, bt, dm, n, length)
    state_dtype = _state_dtype(u.dtype)
    if last_state is None:
        last_state = torch.empty(bt, dm, n, dtype=state_dtype, device=u.device)
    save = checkpoints is not None
    if checkpoints is None:
        checkpoints = last_state  # never written (SAVE_CHECKPOINTS=False)
    grid = (bt, tk.cdiv(dm, config["BD"]))
    args = (u, delta, A, bg, cg, D if D is not None else A, z if z is not None else u,
            delta_bias if delta_bias is not None else A, initial_state if initial_state is not None else last_state,
            out, last_state, checkpoints, b_group, c_group)
    kwargs = dict(BD=config["BD"], BN=clamp_pow2(n, 1, MAX_STATE), BL=config["BL"], HAS_D=D is not None,
                  HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
                  HAS_INIT=initial_state is not None, SAVE_CHECKPOINTS=save, ACC=_acc(u.dtype),
                  num_warps=config["num_warps"], num_stages=config["num_stages"])
    return grid, args, kwargs


def _forward(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, save_checkpoints):
    bt, dm, length, n = _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    state_dtype = _state_dtype(u.dtype)
    out = torch.empty(bt, dm, length, dtype=u.dtype, device=u.device)
    backend = backend_for(u.device)
    config = _config_for((bt, dm, length, n), u.dtype, u.device, backend)
    chunks = _chunks(length)
    checkpoints = (torch.empty(bt, dm, chunks, n, dtype=state_dtype, device=u.device)
                   if save_checkpoints else None)
    if length == 0:
        last_state = (initial_state.to(state_dtype).clone() if initial_state is not None
                      else torch.zeros(bt, dm, n, dtype=state_dtype, device=u.device))
        return out, last_state, checkpoints
    last_state = torch.empty(bt, dm, n, dtype=state_dtype, device=u.device)
    if out.numel() == 0 or n == 0:
        if n == 0 and out.numel():
            # no state: y = D u only
            y = (u.to(state_dtype) * (D.to(state_dtype)[:, None] if D is not None else 0))
            if z is not None:
                y = y * torch.nn.functional.silu(z.to(state_dtype))
            out.copy_(y)
        return out, last_state.zero_(), checkpoints
    grid, args, kwargs = launch_args((u, delta, A, B, C), out, config, D=D, z=z, delta_bias=delta_bias,
                                     delta_softplus=delta_softplus, initial_state=initial_state,
                                     last_state=last_state, checkpoints=checkpoints)
    selective_scan_fwd_kernel[grid](*args, backend=backend, **kwargs)
    return out, last_state, checkpoints


def _backend_of(device):
    """The backend a launch on ``device`` would use (the device's default where none can launch, e.g. meta)."""
    try:
        return backend_for(device)
    except Exception:
        return default_backend(device) if device.type != "meta" else "triton"


def _chunks(length):
    return (length + CHECKPOINT_STEPS - 1) // CHECKPOINT_STEPS


@torch.library.custom_op("tilekit::selective_scan", mutates_args=())
def selective_scan_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                      D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                      delta_bias: torch.Tensor | None = None, initial_state: torch.Tensor | None = None,
                      delta_softplus: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out, last_state, checkpoints): checkpoints (Bt, Dm, chunks, N) holds the state entering each of the
    forward's L-chunks, what the backward recomputes from."""
    out, last_state, checkpoints = _forward(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                               delta_softplus, True)
    return out, last_state, checkpoints


@selective_scan_op.register_fake
def _selective_scan_fake(u, delta, A, B, C, D=None, z=None, delta_bias=None, initial_state=None,
                         delta_softplus=False):
    bt, dm, length, n = _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    state_dtype = _state_dtype(u.dtype)
    return (u.new_empty(bt, dm, length), u.new_empty(bt, dm, n, dtype=state_dtype),
            u.new_empty(bt, dm, _chunks(length), n, dtype=state_dtype))


def _backward_block(config_bd, B, C, dm):
    """The backward's channel block: a block must not straddle two B (or C) groups, since it sums its
    channels' dB/dC into one group row."""
    bd = config_bd
    for x in (B, C):
        if x.dim() == 4 and x.shape[1] > 1:
            group = dm // x.shape[1]
            while group % bd:
                bd //= 2
    return bd


def bwd_adjoint_launch_args(inputs, config, *, delta_softplus=True):
    """(grid, args, kwargs) of the backward's first pass (the reverse-time adjoint scan). ``inputs`` = (u, delta,
    A, B, C, D, z, delta_bias, checkpoints, dout); its outputs are allocated here: args[6] the adjoint entering
    each chunk from the one after (the shape of the checkpoints), args[7] d(initial_state)."""
    u, delta, A, B, C, D, z, delta_bias, checkpoints, dout = inputs
    bt, dm, length = u.shape
    n = A.shape[1]
    bd = _backward_block(config["BD"], B, C, dm)
    cg, c_group = _as_groups("C", C, bt, dm, n, length)
    state_dtype = _state_dtype(u.dtype)
    adjoints = torch.empty(checkpoints.shape, dtype=state_dtype, device=u.device)
    d_init = torch.empty(bt, dm, n, dtype=state_dtype, device=u.device)
    args = (delta, A, cg, z if z is not None else u, delta_bias if delta_bias is not None else A, dout, adjoints,
            d_init, c_group)
    kwargs = dict(BD=bd, BN=clamp_pow2(n, 1, MAX_STATE), BL=CHECKPOINT_STEPS, HAS_Z=z is not None,
                  HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus), ACC=_acc(u.dtype),
                  num_warps=config["num_warps"], num_stages=config["num_stages"])
    return (bt, tk.cdiv(dm, bd)), args, kwargs


def bwd_launch_args(inputs, du, config, *, delta_softplus=True):
    """(grid, args, kwargs) of the backward's second pass, one program per (batch row, channel block, chunk).
    ``inputs`` = (u, delta, A, B, C, D, z, delta_bias, checkpoints, adjoints, dout), ``adjoints`` from the first
    pass; ``du`` (Bt, Dm, L) in the state dtype is the output the tuner checks; the other gradients are
    allocated here (args[12:19]: ddelta, dA, dB, dC, dD, dz, ddelta_bias), the summed ones zeroed."""
    u, delta, A, B, C, D, z, delta_bias, checkpoints, adjoints, dout = inputs
    bt, dm, length = u.shape
    n = A.shape[1]
    state_dtype = _state_dtype(u.dtype)
    bd = _backward_block(config["BD"], B, C, dm)
    bg, b_group = _as_groups("B", B, bt, dm, n, length)
    cg, c_group = _as_groups("C", C, bt, dm, n, length)

    def zeros(*shape):
        return torch.zeros(*shape, dtype=state_dtype, device=u.device)

    ddelta = torch.empty(bt, dm, length, dtype=state_dtype, device=u.device)
    dz = torch.empty(bt, dm, length, dtype=state_dtype, device=u.device) if z is not None else ddelta
    grads = (ddelta, zeros(dm, n), zeros(B.shape if B.dim() == 2 else bg.shape),
             zeros(C.shape if C.dim() == 2 else cg.shape), zeros(dm), dz, zeros(dm))
    args = (u, delta, A, bg, cg, D if D is not None else A, z if z is not None else u,
            delta_bias if delta_bias is not None else A, checkpoints, adjoints, dout, du, *grads, b_group, c_group)
    kwargs = dict(BD=bd, BN=clamp_pow2(n, 1, MAX_STATE), BL=CHECKPOINT_STEPS, HAS_D=D is not None,
                  HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
                  FIXED_B=B.dim() == 2, FIXED_C=C.dim() == 2, ACC=_acc(u.dtype), num_warps=config["num_warps"],
                  num_stages=config["num_stages"])
    return (bt, tk.cdiv(dm, bd), _chunks(length)), args, kwargs


def run_bwd_adjoint(inputs, config, backend, *, delta_softplus=True):
    """Launch the backward's first pass; returns (adjoints, d_initial_state)."""
    grid, args, kwargs = bwd_adjoint_launch_args(inputs, config, delta_softplus=delta_softplus)
    selective_scan_bwd_adjoint_kernel[grid](*args, backend=backend, **kwargs)
    return args[6], args[7]


@torch.library.custom_op("tilekit::selective_scan_backward", mutates_args=())
def selective_scan_backward_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                               C: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None,
                               delta_bias: torch.Tensor | None, checkpoints: torch.Tensor, dout: torch.Tensor,
                               delta_softplus: bool) -> list[torch.Tensor]:
    """[du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state]; a gradient of an absent input is
    an empty tensor."""
    bt, dm, length, n = _check_inputs(u, delta, A, B, C, D, z, delta_bias, None)
    grads = _backward_empty(u, delta, A, B, C, D, z, delta_bias)
    if length == 0 or u.numel() == 0 or n == 0:
        for g in grads:
            g.zero_()
        if n == 0 and u.numel():
            dy = dout.to(grads[-1].dtype)
            if z is not None:
                grads[6].copy_(dout * (u * (D[:, None] if D is not None else 0)) * _dsilu(z))
                dy = dout * torch.nn.functional.silu(z)
            if D is not None:
                grads[0].copy_(dy * D[:, None])
                grads[5].copy_((dy * u).sum((0, 2)))
        return grads
    backend = backend_for(u.device)
    config = _config_for((bt, dm, length, n), u.dtype, u.device, backend, "selective_scan.bwd")
    du = torch.empty(bt, dm, length, dtype=_state_dtype(u.dtype), device=u.device)
    # two passes (README "Backward"): one kernel holding every input and gradient spilled scalar registers on AMD
    adjoints, d_init = run_bwd_adjoint((u, delta, A, B, C, D, z, delta_bias, checkpoints, dout), config, backend,
                                       delta_softplus=delta_softplus)
    grid, args, kwargs = bwd_launch_args((u, delta, A, B, C, D, z, delta_bias, checkpoints, adjoints, dout), du,
                                         config, delta_softplus=delta_softplus)
    selective_scan_bwd_chunk_kernel[grid](*args, backend=backend, **kwargs)
    ddelta, d_a, d_bg, d_cg, d_d, dz, d_bias = args[12:19]
    grads[0].copy_(du)
    grads[1].copy_(ddelta)
    grads[2].copy_(d_a)
    grads[3].copy_(d_bg.reshape(B.shape))
    grads[4].copy_(d_cg.reshape(C.shape))
    if D is not None:
        grads[5].copy_(d_d)
    if z is not None:
        grads[6].copy_(dz)
    if delta_bias is not None:
        grads[7].copy_(d_bias)
    grads[8].copy_(d_init)
    return grads


def _dsilu(z):
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


def _backward_empty(u, delta, A, B, C, D, z, delta_bias):
    bt, dm, length = u.shape
    n = A.shape[1]
    return [u.new_empty(u.shape), delta.new_empty(delta.shape), A.new_empty(A.shape), B.new_empty(B.shape),
            C.new_empty(C.shape), D.new_empty(D.shape) if D is not None else u.new_empty(0),
            z.new_empty(z.shape) if z is not None else u.new_empty(0),
            delta_bias.new_empty(delta_bias.shape) if delta_bias is not None else u.new_empty(0),
            u.new_empty(bt, dm, n, dtype=_state_dtype(u.dtype))]


@selective_scan_backward_op.register_fake
def _selective_scan_backward_fake(u, delta, A, B, C, D, z, delta_bias, checkpoints, dout, delta_softplus):
    _check_inputs(u, delta, A, B, C, D, z, delta_bias, None)
    return _backward_empty(u, delta, A, B, C, D, z, delta_bias)


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus = inputs
    out, last_state, checkpoints = output
    ctx.mark_non_differentiable(last_state, checkpoints)
    bt, dm, length = u.shape
    ctx.delta_softplus = delta_softplus
    ctx.has = (D is not None, z is not None, delta_bias is not None, initial_state is not None)
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, checkpoints)


def _backward(ctx, dout, _d_last_state, _d_checkpoints):
    u, delta, A, B, C, D, z, delta_bias, checkpoints = ctx.saved_tensors
    dout = dout.contiguous() if dout is not None else torch.zeros_like(u)
    du, ddelta, dA, dB, dC, dD, dz, dbias, dinit = torch.ops.tilekit.selective_scan_backward(
        u, delta, A, B, C, D, z, delta_bias, checkpoints, dout, ctx.delta_softplus)
    has_d, has_z, has_bias, has_init = ctx.has
    return (du.to(u.dtype), ddelta.to(delta.dtype), dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
            dD.to(D.dtype) if has_d else None, dz.to(z.dtype) if has_z else None,
            dbias.to(delta_bias.dtype) if has_bias else None,
            dinit if has_init else None, None)


selective_scan_op.register_autograd(_backward, setup_context=_setup_context)


def selective_scan(u, delta, A, B, C, *, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_last_state=False):
    """Mamba-1's selective scan (mamba_ssm ``selective_scan_fn`` semantics, real A). Returns ``out``
    (Bt, Dm, L) in u's dtype, and ``(out, last_state)`` with ``return_last_state=True`` (last_state (Bt, Dm, N)
    fp32, no gradient). Differentiable in u, delta, A, B, C, D, z, delta_bias and initial_state."""
    out, last_state, _ = torch.ops.tilekit.selective_scan(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                                          bool(delta_softplus))
    return (out, last_state) if return_last_state else out


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                             initial_state=None, return_last_state=False):
    """The PyTorch oracle: the sequential recurrence in float64 (cast back to u's dtype)."""
    f = torch.float64
    bt, dm, length = u.shape
    n = A.shape[1]
    uu, dt, a = u.to(f), delta.to(f), A.to(f)
    if delta_bias is not None:
        dt = dt + delta_bias.to(f)[:, None]
    if delta_softplus:
        dt = torch.nn.functional.softplus(dt)

    def per_step(x):  # -> (Bt, Dm, N, L)
        x = x.to(f)
        if x.dim() == 2:
            return x[None, :, :, None].expand(bt, dm, n, length)
        if x.dim() == 3:
            return x[:, None].expand(bt, dm, n, length)
        return x.repeat_interleave(dm // x.shape[1], dim=1)

    bb, cc = per_step(B), per_step(C)
    state = (initial_state.to(f) if initial_state is not None else torch.zeros(bt, dm, n, dtype=f, device=u.device))
    ys = []
    for t in range(length):
        state = torch.exp(dt[:, :, t, None] * a) * state + (dt[:, :, t] * uu[:, :, t])[:, :, None] * bb[..., t]
        ys.append((state * cc[..., t]).sum(-1))
    y = torch.stack(ys, -1) if ys else uu.new_zeros(bt, dm, 0)
    if D is not None:
        y = y + uu * D.to(f)[:, None]
    if z is not None:
        y = y * torch.nn.functional.silu(z.to(f))
    out = y.to(u.dtype)
    return (out, state.to(_state_dtype(u.dtype))) if return_last_state else out


def kernel_example(shape=(1, 5120, 2048, 16), dtype=torch.float16, device=torch.device("cuda"), target=None):
    """(kernel, example args, launch kwargs) at (Bt, Dm, L, N) with variable B/C, on meta tensors (``target``
    is ignored: the forward has one default for every GPU)."""
    bt, dm, length, n = shape
    meta = dict(device="meta")
    u = torch.empty(bt, dm, length, dtype=dtype, **meta)
    delta = torch.empty(bt, dm, length, dtype=dtype, **meta)
    A = torch.empty(dm, n, dtype=torch.float32, **meta)
    B = torch.empty(bt, n, length, dtype=dtype, **meta)
    C = torch.empty(bt, n, length, dtype=dtype, **meta)
    D = torch.empty(dm, dtype=torch.float32, **meta)
    z = torch.empty(bt, dm, length, dtype=dtype, **meta)
    bias = torch.empty(dm, dtype=torch.float32, **meta)
    out = torch.empty(bt, dm, length, dtype=dtype, **meta)
    device = torch.device(device)
    config = _config_for(shape, dtype, device, "reference" if device.type == "cpu" else "triton")
    _, args, kwargs = launch_args((u, delta, A, B, C), out, config, D=D, z=z, delta_bias=bias,
                                  delta_softplus=True)
    return selective_scan_fwd_kernel, args, kwargs


def backward_kernel_example(shape=(1, 5120, 2048, 16), dtype=torch.float16, device=torch.device("cuda"),
                            kernel="chunk"):
    """(kernel, example args, launch kwargs) of the backward's ``kernel`` ("adjoint": the first pass, "chunk": the
    second) at (Bt, Dm, L, N), variable B/C, meta tensors."""
    bt, dm, length, n = shape
    _, fwd_args, _ = kernel_example(shape, dtype, device)
    u, delta, A, bg, cg, D, z, bias = fwd_args[:8]
    meta = dict(device="meta")
    B = torch.empty(bt, n, length, dtype=dtype, **meta)
    checkpoints = torch.empty(bt, dm, _chunks(length), n, dtype=torch.float32, **meta)
    dout = torch.empty(bt, dm, length, dtype=dtype, **meta)
    du = torch.empty(bt, dm, length, dtype=torch.float32, **meta)
    device = torch.device(device)
    config = _config_for(shape, dtype, device, "reference" if device.type == "cpu" else "triton", "selective_scan.bwd")
    if kernel == "adjoint":
        _, args, kwargs = bwd_adjoint_launch_args((u, delta, A, B, B, D, z, bias, checkpoints, dout), config)
        return selective_scan_bwd_adjoint_kernel, args, kwargs
    adjoints = torch.empty_like(checkpoints)
    _, args, kwargs = bwd_launch_args((u, delta, A, B, B, D, z, bias, checkpoints, adjoints, dout), du, config)
    return selective_scan_bwd_chunk_kernel, args, kwargs
