"""``tilekit::selective_state_update``: Mamba-1's decode step, updating a state cache in place."""
import torch

import tilekit as tk

from ...backends import default_backend
from ..dispatch import backend_for, check_tensor, checked_config, clamp_pow2, elem_bytes, provided_config
from .kernels import STATE_UPDATE_TUNABLES, selective_state_update_kernel

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
    bg = B if B.dim() == 3 else B.unsqueeze(1)
    cg = C if C.dim() == 3 else C.unsqueeze(1)
    grid = (bt, tk.cdiv(dm, config["BD"]))
    selective_state_update_kernel[grid](
        state, x, dt, A, bg, cg, D if D is not None else A, z if z is not None else x,
        dt_bias if dt_bias is not None else A, state_batch_indices if state_batch_indices is not None else A, out,
        dm // bg.shape[1], dm // cg.shape[1], BD=config["BD"], BN=clamp_pow2(n, 1, MAX_STATE),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None, SOFTPLUS=bool(dt_softplus),
        HAS_INDICES=state_batch_indices is not None,
        ACC=tk.float64 if state.dtype == torch.float64 else tk.float32, num_warps=config["num_warps"],
        backend=backend)
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
