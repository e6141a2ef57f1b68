"""The torch ops of the SSM family: ``tilekit::selective_scan`` (Mamba-1, forward in the DSL).

``selective_scan(u, delta, A, B, C, *, D, z, delta_bias, delta_softplus, initial_state, return_last_state)``
follows mamba_ssm's ``selective_scan_fn`` with a real A (see README.md for the recurrence).
"""
import torch

import tilekit as tk

from ...backends import default_backend
from ..dispatch import backend_for, check_tensor, checked_config, clamp_pow2, elem_bytes, provided_config
from .kernels import MAX_SCAN_VALUES_PER_THREAD, SELECTIVE_SCAN_TUNABLES, selective_scan_fwd_kernel

OP_NAME = "selective_scan"
KERNEL_IDS = {"selective_scan_fwd_kernel": "selective_scan.fwd"}
MAX_STATE = 256


def _acc(dtype):
    return tk.float64 if dtype == torch.float64 else tk.float32


def _state_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---- configs -------------------------------------------------------------------------------------

def _default_config(shape, dtype, device):
    """Config for the shape tuple (Bt, Dm, L, N)."""
    bt, dm, length, n = shape
    bn = clamp_pow2(n, 1, MAX_STATE)
    if device.type == "cpu":
        # the reference executor and the interpreter pay per program and per loop iteration: long chunks
        bl = clamp_pow2(length, 8, 256)
        bd = clamp_pow2(dm, 1, max(1, 32 * 8 * MAX_SCAN_VALUES_PER_THREAD // (bn * bl)))
        config = {"BD": min(bd, 32), "BL": bl, "num_warps": 8, "num_stages": 1}
    else:
        bl = 64 if bn <= 16 else 16
        bd = max(1, min(8, 32 * 4 * MAX_SCAN_VALUES_PER_THREAD // (bn * bl)))
        config = {"BD": bd, "BL": bl, "num_warps": 4, "num_stages": 1}
    return checked_config(OP_NAME, {**config}, SELECTIVE_SCAN_TUNABLES, elem_bytes(dtype)) and config


def _config_for(shape, dtype, device, backend=None, kernel_id="selective_scan.fwd"):
    backend = backend or default_backend(device)
    config = (provided_config(kernel_id, shape, dtype, device, backend, SELECTIVE_SCAN_TUNABLES, elem_bytes(dtype))
              or _default_config(shape, dtype, device))
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
    chunks = tk.cdiv(length, config["BL"]) if length else 0
    checkpoints = (torch.empty(bt, dm, chunks, n, dtype=state_dtype, device=u.device)
                   if save_checkpoints else None)
    if length == 0:
        last_state = (initial_state.to(state_dtype).clone() if initial_state is not None
                      else torch.zeros(bt, dm, n, dtype=state_dtype, device=u.device))
        return out, last_state, checkpoints, config["BL"]
    last_state = torch.empty(bt, dm, n, dtype=state_dtype, device=u.device)
    if out.numel() == 0 or n == 0:
        if n == 0 and out.numel():
            # no state: y = D u only
            y = (u.to(state_dtype) * (D.to(state_dtype)[:, None] if D is not None else 0))
            if z is not None:
                y = y * torch.nn.functional.silu(z.to(state_dtype))
            out.copy_(y)
        return out, last_state.zero_(), checkpoints, config["BL"]
    grid, args, kwargs = launch_args((u, delta, A, B, C), out, config, D=D, z=z, delta_bias=delta_bias,
                                     delta_softplus=delta_softplus, initial_state=initial_state,
                                     last_state=last_state, checkpoints=checkpoints)
    selective_scan_fwd_kernel[grid](*args, backend=backend, **kwargs)
    return out, last_state, checkpoints, config["BL"]


@torch.library.custom_op("tilekit::selective_scan", mutates_args=())
def selective_scan_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                      D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                      delta_bias: torch.Tensor | None = None, initial_state: torch.Tensor | None = None,
                      delta_softplus: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    out, last_state, _, _ = _forward(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, False)
    return out, last_state


@selective_scan_op.register_fake
def _selective_scan_fake(u, delta, A, B, C, D=None, z=None, delta_bias=None, initial_state=None,
                         delta_softplus=False):
    bt, dm, length, n = _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    return u.new_empty(bt, dm, length), u.new_empty(bt, dm, n, dtype=_state_dtype(u.dtype))


def selective_scan(u, delta, A, B, C, *, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_last_state=False):
    """Mamba-1's selective scan (mamba_ssm ``selective_scan_fn`` semantics, real A). Returns ``out``
    (Bt, Dm, L) in u's dtype, and ``(out, last_state)`` with ``return_last_state=True``."""
    out, last_state = torch.ops.tilekit.selective_scan(u, delta, A, B, C, D, z, delta_bias, initial_state,
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


def kernel_example(shape=(1, 5120, 2048, 16), dtype=torch.float16, device=torch.device("cuda")):
    """(kernel, example args, launch kwargs) at (Bt, Dm, L, N) with variable B/C, on meta tensors."""
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
