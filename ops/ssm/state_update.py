"""``tilekit::selective_state_update`` and ``tilekit::ssd_state_update``: the Mamba-1 and Mamba-2 decode steps,
each updating a state cache in place."""
import torch

import tilekit as tk

from ...backends import default_backend
from ..dispatch import backend_for, check_tensor, checked_config, clamp_pow2, elem_bytes, provided_config
from .kernels import (SSD_STATE_UPDATE_TUNABLES, STATE_UPDATE_TUNABLES, selective_state_update_kernel,
                      ssd_state_update_kernel)

OP_NAME = "selective_state_update"
MAX_STATE = 256


def _default_config(shape, dtype, device, backend=None):
    """Config for (Bt, Dm, N)."""
    bn = clamp_pow2(shape[2], 1, MAX_STATE)
    bd = clamp_pow2(shape[1], 1, max(1, 4096 // bn)) if device.type == "cpu" and backend != "opencl" else \
        max(1, min(16, 2048 // bn))
    config = {"BD": min(bd, 64), "num_warps": 4 if backend != "opencl" else 1}
    return checked_config(OP_NAME, {**config, "BN": bn}, STATE_UPDATE_TUNABLES, elem_bytes(dtype)) and config


def _config_for(shape, dtype, device, backend):
    return dict(provided_config("selective_state_update.main", shape, dtype, device, backend, STATE_UPDATE_TUNABLES,
                                elem_bytes(dtype)) or _default_config(shape, dtype, device, backend))


def _check(state, x, dt, A, B, C, D, z, dt_bias, state_batch_indices):
    check_tensor(OP_NAME, "x", x, ranks=(2,))
    bt, dm = x.shape
    check_tensor(OP_NAME, "state", state, ranks=(3,))
    check_tensor(OP_NAME, "A", A, ranks=(2,))
    if A.shape[0] != dm:
        raise ValueError(f"tilekit::{OP_NAME}: 'A' must be (Dm, N) with Dm = {dm}, got {tuple(A.shape)}")
    n = A.shape[1]
    if state.shape[1:] != (dm, n) or state.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"tilekit::{OP_NAME}: 'state' must be fp32 (S, {dm}, {n}), got {state.dtype} "
                         f"{tuple(state.shape)}")
    if state_batch_indices is None and state.shape[0] != bt:
        raise ValueError(f"tilekit::{OP_NAME}: without state_batch_indices 'state' needs S == Bt = {bt}, got "
                         f"{state.shape[0]}")
    for name, t, shape in (("dt", dt, (bt, dm)), ("z", z, (bt, dm)), ("D", D, (dm,)), ("dt_bias", dt_bias, (dm,))):
        if t is not None:
            check_tensor(OP_NAME, name, t)
            if tuple(t.shape) != shape:
                raise ValueError(f"tilekit::{OP_NAME}: '{name}' must be {shape}, got {tuple(t.shape)}")
    for name, t in (("B", B), ("C", C)):
        check_tensor(OP_NAME, name, t, ranks=(2, 3))
        if t.shape[0] != bt or t.shape[-1] != n or (t.dim() == 3 and (t.shape[1] == 0 or dm % t.shape[1])):
            raise ValueError(f"tilekit::{OP_NAME}: '{name}' must be (Bt, N) or (Bt, G, N) with G dividing Dm, "
                             f"got {tuple(t.shape)}")
    if state_batch_indices is not None:
        if state_batch_indices.dtype != torch.int32 or tuple(state_batch_indices.shape) != (bt,):
            raise TypeError(f"tilekit::{OP_NAME}: 'state_batch_indices' must be int32 ({bt},), got "
                            f"{state_batch_indices.dtype} {tuple(state_batch_indices.shape)}")
    return bt, dm, n


def launch_args(inputs, out, config):
    """(grid, args, kwargs) of the Mamba-1 step; the op and the tuner both launch through this.
    ``inputs`` = (state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, state_batch_indices)."""
    state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, state_batch_indices = inputs
    bt, dm = x.shape
    n = A.shape[1]
    bg = B if B.dim() == 3 else B.unsqueeze(1)
    cg = C if C.dim() == 3 else C.unsqueeze(1)
    args = (state, x, dt, A, bg, cg, D if D is not None else A, z if z is not None else x,
            dt_bias if dt_bias is not None else A, state_batch_indices if state_batch_indices is not None else A, out,
            dm // bg.shape[1], dm // cg.shape[1])
    kwargs = dict(BD=config["BD"], BN=clamp_pow2(n, 1, MAX_STATE), HAS_D=D is not None, HAS_Z=z is not None,
                  HAS_BIAS=dt_bias is not None, SOFTPLUS=bool(dt_softplus),
                  HAS_INDICES=state_batch_indices is not None,
                  ACC=tk.float64 if state.dtype == torch.float64 else tk.float32, num_warps=config["num_warps"])
    return (bt, tk.cdiv(dm, config["BD"])), args, kwargs


@torch.library.custom_op("tilekit::selective_state_update", mutates_args=("state",))
def selective_state_update_op(state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor,
                              B: torch.Tensor, C: torch.Tensor, D: torch.Tensor | None = None,
                              z: torch.Tensor | None = None, dt_bias: torch.Tensor | None = None,
                              dt_softplus: bool = False,
                              state_batch_indices: torch.Tensor | None = None) -> torch.Tensor:
    bt, dm, n = _check(state, x, dt, A, B, C, D, z, dt_bias, state_batch_indices)
    out = torch.zeros(bt, dm, dtype=x.dtype, device=x.device)  # padding rows stay 0
    if out.numel() == 0 or n == 0:
        if n == 0 and D is not None and out.numel():
            y = x * D
            out.copy_(y * torch.nn.functional.silu(z) if z is not None else y)
        return out
    backend = backend_for(x.device)
    config = _config_for((bt, dm, n), x.dtype, x.device, backend)
    grid, args, kwargs = launch_args((state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, state_batch_indices), out,
                                     config)
    selective_state_update_kernel[grid](*args, backend=backend, **kwargs)
    return out


@selective_state_update_op.register_fake
def _fake(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, state_batch_indices=None):
    bt, dm, n = _check(state, x, dt, A, B, C, D, z, dt_bias, state_batch_indices)
    return x.new_empty(bt, dm)


def selective_state_update(state, x, dt, A, B, C, *, D=None, z=None, dt_bias=None, dt_softplus=False,
                           state_batch_indices=None):
    """One Mamba-1 decode step: advances ``state`` (S, Dm, N) fp32 in place and returns out (Bt, Dm)."""
    return torch.ops.tilekit.selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, bool(dt_softplus),
                                                    state_batch_indices)


# ---- Mamba-2 ------------------------------------------------------------------------------------

SSD_OP_NAME = "ssd_state_update"


def _ssd_default_config(shape, dtype, device, backend=None):
    """Config for (Bt, H, P, N)."""
    bn = clamp_pow2(shape[3], 1, MAX_STATE)
    if backend == "opencl":
        config = {"BP": clamp_pow2(shape[2], 1, 16), "num_warps": 1}
    elif device.type == "cpu":
        config = {"BP": clamp_pow2(shape[2], 1, 64), "num_warps": 4}
    else:
        config = {"BP": max(1, min(16, 2048 // bn)), "num_warps": 4}
    return checked_config(SSD_OP_NAME, {**config, "BN": bn}, SSD_STATE_UPDATE_TUNABLES, elem_bytes(dtype)) and config


def _ssd_config_for(shape, dtype, device, backend):
    return dict(provided_config("ssd_state_update.main", shape, dtype, device, backend, SSD_STATE_UPDATE_TUNABLES,
                                elem_bytes(dtype)) or _ssd_default_config(shape, dtype, device, backend))


def _ssd_check(state, x, dt, A, B, C, D, z, dt_bias, state_batch_indices):
    name = SSD_OP_NAME
    check_tensor(name, "x", x, ranks=(3,))
    bt, heads, hdim = x.shape
    check_tensor(name, "state", state, ranks=(4,))
    check_tensor(name, "A", A, ranks=(1,))
    if tuple(A.shape) != (heads,):
        raise ValueError(f"tilekit::{name}: 'A' must be ({heads},), got {tuple(A.shape)}")
    for arg, t in (("B", B), ("C", C)):
        check_tensor(name, arg, t, ranks=(3,))
        if t.shape[0] != bt or t.shape[1] == 0 or heads % t.shape[1]:
            raise ValueError(f"tilekit::{name}: '{arg}' must be (Bt, G, N) with G dividing H = {heads}, got "
                             f"{tuple(t.shape)}")
    if tuple(C.shape) != tuple(B.shape):
        raise ValueError(f"tilekit::{name}: 'C' is {tuple(C.shape)} but 'B' is {tuple(B.shape)}")
    n = B.shape[2]
    if n > MAX_STATE:
        raise ValueError(f"tilekit::{name}: 'B' has N = {n} states; at most {MAX_STATE} are supported")
    if state.shape[1:] != (heads, hdim, n) or state.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"tilekit::{name}: 'state' must be fp32 (S, {heads}, {hdim}, {n}), got {state.dtype} "
                         f"{tuple(state.shape)}")
    if state_batch_indices is None and state.shape[0] != bt:
        raise ValueError(f"tilekit::{name}: without state_batch_indices 'state' needs S == Bt = {bt}, got "
                         f"{state.shape[0]}")
    for arg, t, shapes in (("dt", dt, ((bt, heads),)), ("z", z, ((bt, heads, hdim),)),
                           ("D", D, ((heads,), (heads, hdim))), ("dt_bias", dt_bias, ((heads,),))):
        if t is not None:
            check_tensor(name, arg, t)
            if tuple(t.shape) not in shapes:
                raise ValueError(f"tilekit::{name}: '{arg}' must be {' or '.join(map(str, shapes))}, got "
                                 f"{tuple(t.shape)}")
    for arg, t in (("state", state), ("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
                   ("dt_bias", dt_bias), ("state_batch_indices", state_batch_indices)):
        if t is not None and t.device != x.device:
            raise ValueError(f"tilekit::{name}: '{arg}' is on {t.device} but 'x' is on {x.device}")
    if state_batch_indices is not None:
        if state_batch_indices.dtype != torch.int32 or tuple(state_batch_indices.shape) != (bt,):
            raise TypeError(f"tilekit::{name}: 'state_batch_indices' must be int32 ({bt},), got "
                            f"{state_batch_indices.dtype} {tuple(state_batch_indices.shape)}")
    return bt, heads, hdim, n


def ssd_update_launch_args(inputs, out, config):
    """(grid, args, kwargs) of the Mamba-2 step; the op and the tuner both launch through this.
    ``inputs`` = (state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, state_batch_indices)."""
    state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, indices = inputs
    bt, heads, hdim = x.shape
    n = B.shape[2]
    args = (state, x, dt, A, B, C, D if D is not None else A, z if z is not None else x,
            dt_bias if dt_bias is not None else A, indices if indices is not None else A, out,
            heads // B.shape[1])
    kwargs = dict(BP=config["BP"], BN=clamp_pow2(n, 1, MAX_STATE), HAS_D=D is not None,
                  D_PER_P=D is not None and D.dim() == 2, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None,
                  SOFTPLUS=bool(dt_softplus), HAS_INDICES=indices is not None,
                  ACC=tk.float64 if state.dtype == torch.float64 else tk.float32, num_warps=config["num_warps"])
    return (bt, heads, tk.cdiv(hdim, config["BP"])), args, kwargs


@torch.library.custom_op("tilekit::ssd_state_update", mutates_args=("state",))
def ssd_state_update_op(state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor,
                        B: torch.Tensor, C: torch.Tensor, D: torch.Tensor | None = None,
                        z: torch.Tensor | None = None, dt_bias: torch.Tensor | None = None,
                        dt_softplus: bool = False, state_batch_indices: torch.Tensor | None = None) -> torch.Tensor:
    bt, heads, hdim, n = _ssd_check(state, x, dt, A, B, C, D, z, dt_bias, state_batch_indices)
    out = torch.zeros(bt, heads, hdim, dtype=x.dtype, device=x.device)  # padding rows stay 0
    if out.numel() == 0 or n == 0:
        if n == 0 and D is not None and out.numel():
            y = x * (D if D.dim() == 2 else D[:, None])
            y = y * torch.nn.functional.silu(z) if z is not None else y
            if state_batch_indices is not None:
                y = y * (state_batch_indices >= 0)[:, None, None]
            out.copy_(y)
        return out
    backend = backend_for(x.device)
    config = _ssd_config_for((bt, heads, hdim, n), x.dtype, x.device, backend)
    grid, args, kwargs = ssd_update_launch_args((state, x, dt, A, B, C, D, z, dt_bias, dt_softplus,
                                                 state_batch_indices), out, config)
    ssd_state_update_kernel[grid](*args, backend=backend, **kwargs)
    return out


@ssd_state_update_op.register_fake
def _ssd_fake(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, state_batch_indices=None):
    bt, heads, hdim, n = _ssd_check(state, x, dt, A, B, C, D, z, dt_bias, state_batch_indices)
    return x.new_empty(bt, heads, hdim)


def ssd_state_update(state, x, dt, A, B, C, *, D=None, z=None, dt_bias=None, dt_softplus=False,
                     state_batch_indices=None):
    """One Mamba-2 decode step: advances ``state`` (S, H, P, N) fp32 in place and returns out (Bt, H, P)."""
    return torch.ops.tilekit.ssd_state_update(state, x, dt, A, B, C, D, z, dt_bias, bool(dt_softplus),
                                              state_batch_indices)
