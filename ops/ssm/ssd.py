"""``tilekit::ssd_scan``: Mamba-2's SSD (mamba_ssm ``mamba_chunk_scan_combined`` semantics), forward only
for now (no autograd yet)."""
import math

import torch

import tilekit as tk

from ...backends import default_backend
from ..dispatch import backend_for, check_tensor, clamp_pow2, elem_bytes, provided_config
from .kernels import SSD_TUNABLES, ssd_scan_fwd_kernel

OP_NAME = "ssd_scan"


def _default_config(shape, dtype, device, backend=None):
    """Config for (Bt, L, H, P, N, chunk)."""
    hdim = shape[3]
    if backend == "opencl":
        return {"BP": clamp_pow2(hdim, 8, 16), "num_warps": 1, "num_stages": 1}
    if device.type == "cpu":
        return {"BP": clamp_pow2(hdim, 8, 64), "num_warps": 4, "num_stages": 1}
    return {"BP": 32 if shape[5] >= 128 else 64, "num_warps": 4, "num_stages": 1}


def _config_for(shape, dtype, device, backend):
    return dict(provided_config("ssd_scan.fwd", shape, dtype, device, backend, SSD_TUNABLES, elem_bytes(dtype))
                or _default_config(shape, dtype, device, backend))


def _check(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, dt_limit):
    check_tensor(OP_NAME, "x", x, ranks=(4,))
    bt, length, heads, hdim = x.shape
    check_tensor(OP_NAME, "dt", dt, ranks=(3,))
    check_tensor(OP_NAME, "A", A, ranks=(1,))
    if tuple(dt.shape) != (bt, length, heads):
        raise ValueError(f"tilekit::{OP_NAME}: 'dt' must be {(bt, length, heads)}, got {tuple(dt.shape)}")
    if tuple(A.shape) != (heads,):
        raise ValueError(f"tilekit::{OP_NAME}: 'A' must be ({heads},), got {tuple(A.shape)}")
    for name, t in (("B", B), ("C", C)):
        check_tensor(OP_NAME, name, t, ranks=(4,))
        if t.shape[:2] != (bt, length) or t.shape[2] == 0 or heads % t.shape[2]:
            raise ValueError(f"tilekit::{OP_NAME}: '{name}' must be (Bt, L, G, N) with G dividing H = {heads}, "
                             f"got {tuple(t.shape)}")
    if tuple(C.shape) != tuple(B.shape):
        raise ValueError(f"tilekit::{OP_NAME}: 'C' is {tuple(C.shape)} but 'B' is {tuple(B.shape)}")
    n = B.shape[3]
    if not (isinstance(chunk_size, int) and 16 <= chunk_size <= 256 and chunk_size & (chunk_size - 1) == 0):
        raise ValueError(f"tilekit::{OP_NAME}: 'chunk_size' must be a power of two from 16 to 256, got {chunk_size}")
    for name, t, shapes in (("D", D, ((heads, hdim), (heads,))), ("z", z, ((bt, length, heads, hdim),)),
                            ("dt_bias", dt_bias, ((heads,),)), ("initial_states", initial_states,
                                                                ((bt, heads, hdim, n),))):
        if t is not None:
            check_tensor(OP_NAME, name, t)
            if tuple(t.shape) not in shapes:
                raise ValueError(f"tilekit::{OP_NAME}: '{name}' must be {' or '.join(map(str, shapes))}, "
                                 f"got {tuple(t.shape)}")
    if seq_idx is not None and (seq_idx.dtype != torch.int32 or tuple(seq_idx.shape) != (bt, length)):
        raise TypeError(f"tilekit::{OP_NAME}: 'seq_idx' must be int32 {(bt, length)}, got {seq_idx.dtype} "
                        f"{tuple(seq_idx.shape)}")
    if len(dt_limit) != 2:
        raise ValueError(f"tilekit::{OP_NAME}: 'dt_limit' must be (min, max), got {dt_limit}")
    return bt, length, heads, hdim, n


@torch.library.custom_op("tilekit::ssd_scan", mutates_args=())
def ssd_scan_op(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                chunk_size: int, D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                dt_bias: torch.Tensor | None = None, initial_states: torch.Tensor | None = None,
                seq_idx: torch.Tensor | None = None, dt_softplus: bool = False, dt_min: float = 0.0,
                dt_max: float = 3.0e38) -> tuple[torch.Tensor, torch.Tensor]:
    bt, length, heads, hdim, n = _check(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx,
                                        (dt_min, dt_max))
    state_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = torch.empty(bt, length, heads, hdim, dtype=x.dtype, device=x.device)
    final = torch.empty(bt, heads, hdim, n, dtype=state_dtype, device=x.device)
    if y.numel() == 0 or n == 0:
        final.copy_(initial_states if initial_states is not None and length == 0 else torch.zeros_like(final))
        if y.numel():
            y.copy_(_skip_only(x, D, z))
        return y, final
    backend = backend_for(x.device)
    config = _config_for((bt, length, heads, hdim, n, chunk_size), x.dtype, x.device, backend)
    clamp = not (dt_min == 0.0 and dt_max >= 3.0e38)
    grid = (bt, heads, tk.cdiv(hdim, config["BP"]))
    ssd_scan_fwd_kernel[grid](
        x, dt, A, B, C, D if D is not None else A, z if z is not None else x, dt_bias if dt_bias is not None else A,
        initial_states if initial_states is not None else final, seq_idx if seq_idx is not None else A, y, final,
        heads // B.shape[2], float(dt_min), float(min(dt_max, 3.0e38)),
        Q=chunk_size, BP=config["BP"], BN=clamp_pow2(n, 1, 256), HAS_D=D is not None,
        D_PER_P=D is not None and D.dim() == 2, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None,
        SOFTPLUS=bool(dt_softplus), CLAMP=clamp, HAS_INIT=initial_states is not None, HAS_SEQ=seq_idx is not None,
        ACC=tk.float64 if x.dtype == torch.float64 else tk.float32, num_warps=config["num_warps"],
        num_stages=config["num_stages"], backend=backend)
    return y, final


def _skip_only(x, D, z):
    y = torch.zeros_like(x, dtype=torch.float32)
    if D is not None:
        y = x.float() * (D.float() if D.dim() == 2 else D.float()[:, None])
    if z is not None:
        y = y * torch.nn.functional.silu(z.float())
    return y


@ssd_scan_op.register_fake
def _fake(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
          dt_softplus=False, dt_min=0.0, dt_max=3.0e38):
    bt, length, heads, hdim, n = _check(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx,
                                        (dt_min, dt_max))
    state_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return x.new_empty(bt, length, heads, hdim), x.new_empty(bt, heads, hdim, n, dtype=state_dtype)


def ssd_scan(x, dt, A, B, C, chunk_size, *, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
             dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False):
    """Mamba-2 SSD. Returns y (Bt, L, H, P) in x's dtype, and (y, final_states (Bt, H, P, N) fp32) with
    return_final_states. Forward only: no autograd yet."""
    y, final = torch.ops.tilekit.ssd_scan(x, dt, A, B, C, int(chunk_size), D, z, dt_bias, initial_states, seq_idx,
                                          bool(dt_softplus), float(dt_limit[0]), min(float(dt_limit[1]), 3.0e38))
    return (y, final) if return_final_states else y
