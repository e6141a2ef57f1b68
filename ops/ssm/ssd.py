"""``tilekit::ssd_scan``: Mamba-2's SSD (mamba_ssm ``mamba_chunk_scan_combined`` semantics), with autograd
through ``tilekit::ssd_scan_backward``.

The backward recomputes the state entering every chunk (one forward launch that saves them, as mamba_ssm's
backward recomputes its chunk states), so autograd keeps only the inputs: O(Bt·L·H·P), no state history."""
import math

import torch

import tilekit as tk

from ...backends import default_backend
from ..dispatch import backend_for, check_tensor, clamp_pow2, elem_bytes, gpu_arch_family, provided_config
from .kernels import (SSD_BWD_TUNABLES, SSD_TUNABLES, ssd_bwd_dc_kernel, ssd_bwd_dstate_kernel, ssd_bwd_dt_kernel,
                      ssd_bwd_dx_kernel, ssd_bwd_gate_kernel, ssd_scan_fwd_kernel)

OP_NAME = "ssd_scan"


# GPU forward defaults per architecture family, from the AOT sweep at Mamba-2-2.7B (chunk 256, fp16): the
# widest tiles with no stack frame. sm_90 BP 32 spills 96 B (BP 16: 243 regs, 20 wgmma); sm_80 spills at every
# BQ 64 (BP 16, BQ 32, 8 warps: 252 regs, 56 mma.sync); AMD BP 32, BQ 64: about 400 VGPRs, 64 mfma, no spills.
_GPU_FORWARD = {"sm_90": {"BP": 16, "BQ": 64, "num_warps": 4}, "sm_80": {"BP": 16, "BQ": 32, "num_warps": 8},
                "amd": {"BP": 32, "BQ": 64, "num_warps": 4}}


def _default_config(shape, dtype, device, backend=None, target=None):
    """Config for (Bt, L, H, P, N, chunk); ``target`` (an AOT target name) picks the architecture."""
    hdim = shape[3]
    if backend == "opencl":
        # PoCL turns every tile op into C loops: small tiles keep its compile time down
        return {"BP": clamp_pow2(hdim, 8, 16), "BQ": 16, "num_warps": 1, "num_stages": 1}
    if device.type == "cpu" and target is None:
        return {"BP": clamp_pow2(hdim, 8, 64), "BQ": 32, "num_warps": 4, "num_stages": 1}
    return {**_GPU_FORWARD[gpu_arch_family(device, target)], "num_stages": 1}


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
    for name, t in (("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z), ("dt_bias", dt_bias),
                    ("initial_states", initial_states), ("seq_idx", seq_idx)):
        if t is not None and t.device != x.device:
            raise ValueError(f"tilekit::{OP_NAME}: '{name}' is on {t.device} but 'x' is on {x.device}")
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
    _launch_forward(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, dt_softplus, dt_min,
                    dt_max, y, final, None)
    return y, final


def _flags(D, z, dt_bias, seq_idx, dt_softplus, dt_min, dt_max):
    return dict(HAS_D=D is not None, D_PER_P=D is not None and D.dim() == 2, HAS_Z=z is not None,
                HAS_BIAS=dt_bias is not None, SOFTPLUS=bool(dt_softplus),
                CLAMP=not (dt_min == 0.0 and dt_max >= 3.0e38), HAS_SEQ=seq_idx is not None)


def _launch_forward(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, dt_softplus, dt_min,
                    dt_max, y, final, chunk_states, config=None):
    """The forward kernel into y and final; with ``chunk_states`` (Bt, H, chunks, P, N) it also saves the state
    entering each chunk. ``config`` overrides the looked-up / default one."""
    bt, length, heads, hdim = x.shape
    n = B.shape[3]
    backend = backend_for(x.device)
    config = config or _config_for((bt, length, heads, hdim, n, chunk_size), x.dtype, x.device, backend)
    grid = (bt, heads, tk.cdiv(hdim, config["BP"]))
    ssd_scan_fwd_kernel[grid](
        x, dt, A, B, C, D if D is not None else A, z if z is not None else x, dt_bias if dt_bias is not None else A,
        initial_states if initial_states is not None else final, seq_idx if seq_idx is not None else A, y, final,
        chunk_states if chunk_states is not None else final, heads // B.shape[2], float(dt_min),
        float(min(dt_max, 3.0e38)), Q=chunk_size, S=min(config["BQ"], chunk_size), BP=config["BP"],
        BN=clamp_pow2(n, 1, 256), HAS_INIT=initial_states is not None, SAVE_STATES=chunk_states is not None,
        DOT=dot_dtype(x.dtype), ACC=_acc(x.dtype),
        num_warps=config["num_warps"], num_stages=config["num_stages"], backend=backend,
        **_flags(D, z, dt_bias, seq_idx, dt_softplus, dt_min, dt_max))


def chunk_states(x, dt, A, B, C, chunk_size, *, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
                 dt_softplus=False, dt_min=0.0, dt_max=3.0e38):
    """(the state entering each chunk (Bt, H, cdiv(L, chunk_size), P, N), the output before the z gate
    (Bt, L, H, P)), both in the state dtype, from one forward launch: what the backward starts from."""
    bt, length, heads, hdim = x.shape
    state_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    states = torch.empty(bt, heads, tk.cdiv(length, chunk_size), hdim, B.shape[3], dtype=state_dtype,
                         device=x.device)
    y_pre = torch.empty(bt, length, heads, hdim, dtype=state_dtype, device=x.device)
    _launch_forward(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, dt_softplus, dt_min, dt_max,
                    y_pre, torch.empty(bt, heads, hdim, B.shape[3], dtype=state_dtype, device=x.device), states)
    return states, y_pre


BACKWARD_KERNELS = ("gate", "dstate", "dx", "dc", "dt")


def backward_plan(inputs, dx, configs, *, D=None, z=None, dt_bias=None, seq_idx=None, dt_softplus=False,
                  dt_min=0.0, dt_max=3.0e38, grads=None, scratch=None):
    """{name: (kernel, grid, args, kwargs)} of the backward kernels (all five; no "gate" without z and D), to be
    launched in BACKWARD_KERNELS order (the op and the tuner both launch through this). ``inputs`` = (x, dt, A, B, C, chunk_size, states,
    y_pre, dy, d_final) (states and y_pre from ``chunk_states``); ``dx`` (Bt, L, H, P) in the state dtype;
    ``configs`` {name: config} (BP, BQ, num_warps, num_stages) for "gate", "dstate", "dx" and "dc".
    ``grads`` = (ddt, dA, dB, dC, dD, dz, ddt_bias, dinit) and ``scratch`` = (dy_gated, d_states, d_cum,
    ddt_direct), or None to allocate them here (zeroed where a kernel adds atomically)."""
    x, dt, A, B, C, chunk_size, states, y_pre, dy, d_final = inputs
    bt, length, heads, hdim = x.shape
    n = B.shape[3]
    chunks = tk.cdiv(length, chunk_size)

    def zeros(*shape):
        return torch.zeros(*shape, dtype=dx.dtype, device=x.device)

    if grads is None:
        grads = (torch.empty(bt, length, heads, dtype=dx.dtype, device=x.device), zeros(heads), zeros(B.shape),
                 zeros(C.shape), zeros(D.shape) if D is not None else zeros(heads),
                 torch.empty_like(dx) if z is not None else zeros(0), zeros(heads),
                 torch.empty(bt, heads, hdim, n, dtype=dx.dtype, device=x.device))
    if scratch is None:
        scratch = (torch.empty_like(dx) if z is not None else dy,
                   torch.empty(states.shape, dtype=dx.dtype, device=x.device),
                   zeros(bt, heads, chunks * chunk_size), zeros(bt, heads, chunks * chunk_size))
    d_dt, d_a, d_b, d_c, d_d, dz, d_bias, d_init = grads
    dy_gated, d_states, d_cum, d_dt_direct = scratch
    flags = _flags(D, z, dt_bias, seq_idx, dt_softplus, dt_min, dt_max)
    scalars = (heads // B.shape[2], float(dt_min), float(min(dt_max, 3.0e38)))
    bias = dt_bias if dt_bias is not None else A
    seq = seq_idx if seq_idx is not None else A
    common = dict(Q=chunk_size, BN=clamp_pow2(n, 1, 256), DOT=dot_dtype(x.dtype), ACC=_acc(x.dtype))
    step = {k: flags[k] for k in ("HAS_BIAS", "SOFTPLUS", "CLAMP", "HAS_SEQ")}

    def launch(name):
        c = configs[name]
        return dict(S=min(c["BQ"], chunk_size), BP=c["BP"], num_warps=c["num_warps"], num_stages=c["num_stages"])

    def p_blocks(name):
        return tk.cdiv(hdim, configs[name]["BP"])

    def sub_chunks(name):
        return bt * chunks * (chunk_size // min(configs[name]["BQ"], chunk_size))

    plan = {
        "gate": (ssd_bwd_gate_kernel, (bt * chunks, heads, p_blocks("gate")),
                 (x, z if z is not None else x, y_pre, dy, D if D is not None else A, dy_gated,
                  dz if z is not None else x, d_d, chunks),
                 dict(Q=chunk_size, ACC=_acc(x.dtype), HAS_D=flags["HAS_D"], D_PER_P=flags["D_PER_P"],
                      HAS_Z=flags["HAS_Z"], **launch("gate"))),
        "dstate": (ssd_bwd_dstate_kernel, (bt, heads, p_blocks("dstate")),
                   (dt, A, C, bias, seq, dy_gated, states, d_final, d_states, d_cum, d_init, *scalars),
                   dict(**common, **step, **launch("dstate"))),
        "dx": (ssd_bwd_dx_kernel, (sub_chunks("dx"), heads, p_blocks("dx")),
               (x, dt, A, B, C, D if D is not None else A, bias, seq, dy_gated, d_states, dx, d_b, d_cum,
                d_dt_direct, *scalars),
               dict(**common, HAS_D=flags["HAS_D"], D_PER_P=flags["D_PER_P"], **step, **launch("dx"))),
        "dc": (ssd_bwd_dc_kernel, (sub_chunks("dc"), heads, p_blocks("dc")),
               (x, dt, A, B, C, bias, seq, dy_gated, states, d_c, d_cum, *scalars),
               dict(**common, **step, **launch("dc"))),
        "dt": (ssd_bwd_dt_kernel, (bt, heads),
               (dt, A, bias, d_cum, d_dt_direct, d_dt, d_a, d_bias, scalars[1], scalars[2]),
               dict(Q=chunk_size, ACC=_acc(x.dtype), HAS_BIAS=flags["HAS_BIAS"], SOFTPLUS=flags["SOFTPLUS"],
                    CLAMP=flags["CLAMP"], num_warps=4, num_stages=1)),
    }
    if z is None and D is None:
        del plan["gate"]  # nothing to do: dy is the gradient before the (absent) gate
    return plan, grads, scratch


def run_backward_plan(plan, backend, names=BACKWARD_KERNELS):
    for name in names:
        if name in plan:
            kernel, grid, args, kwargs = plan[name]
            kernel[grid](*args, backend=backend, **kwargs)


def dot_dtype(dtype):
    """Matmul operand dtype: fp16/bf16 inputs keep theirs (tensor cores), fp32/fp64 stay exact."""
    return {torch.float16: tk.float16, torch.bfloat16: tk.bfloat16}.get(dtype, _acc(dtype))


def _acc(dtype):
    return tk.float64 if dtype == torch.float64 else tk.float32


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


# GPU backward defaults per architecture family and kernel, from the AOT sweep at Mamba-2-2.7B (chunk 256, fp16):
# the widest tiles with no spill (README, "Compiled for GPUs"). dx spills at BQ 64 or BP 64 everywhere (sm_90
# 552 / 168 B stack, gfx942 33 / 4 SGPR spills); dc at BQ 64 spills 96 B on sm_80 with 4 warps, and at BQ 32
# spills 36 SGPRs on gfx942 (0 at BQ 16 or 64).
_GPU_BACKWARD = {
    "sm_90": {"gate": {"BP": 64, "BQ": 32, "num_warps": 4}, "dstate": {"BP": 32, "BQ": 64, "num_warps": 4},
              "dx": {"BP": 32, "BQ": 32, "num_warps": 4}, "dc": {"BP": 32, "BQ": 64, "num_warps": 4}},
    "sm_80": {"gate": {"BP": 64, "BQ": 32, "num_warps": 4}, "dstate": {"BP": 32, "BQ": 64, "num_warps": 4},
              "dx": {"BP": 32, "BQ": 32, "num_warps": 4}, "dc": {"BP": 32, "BQ": 64, "num_warps": 8}},
    "amd": {"gate": {"BP": 64, "BQ": 32, "num_warps": 4}, "dstate": {"BP": 32, "BQ": 64, "num_warps": 4},
            "dx": {"BP": 32, "BQ": 32, "num_warps": 4}, "dc": {"BP": 32, "BQ": 64, "num_warps": 4}},
}
# the kernels a tuned ``ssd_scan.KERNEL`` entry configures
TUNED_BACKWARD = {"dx": "ssd_scan.bwd", "dc": "ssd_scan.bwd_dc", "dstate": "ssd_scan.bwd_dstate"}


def _default_bwd_configs(shape, dtype, device, backend=None, target=None):
    """{kernel: config} of the backward kernels for (Bt, L, H, P, N, chunk); ``target`` (an AOT target name)
    picks the architecture."""
    hdim = shape[3]
    if backend == "opencl":
        small = {"BP": clamp_pow2(hdim, 8, 16), "BQ": 16, "num_warps": 1, "num_stages": 1}
        return {name: dict(small) for name in ("gate", "dstate", "dx", "dc")}
    if device.type == "cpu" and target is None:
        cpu = {"BP": clamp_pow2(hdim, 8, 64), "BQ": 16, "num_warps": 4, "num_stages": 1}
        return {name: dict(cpu) for name in ("gate", "dstate", "dx", "dc")}
    arch = _GPU_BACKWARD[gpu_arch_family(device, target)]
    return {name: {**arch[name], "num_stages": 1} for name in ("gate", "dstate", "dx", "dc")}


def _default_bwd_config(shape, dtype, device, backend=None, target=None, kernel="dx"):
    """The default config of one backward kernel (the tuner's ``ssd_scan.bwd`` is the dx kernel)."""
    return _default_bwd_configs(shape, dtype, device, backend, target)[kernel]


def _bwd_configs_for(shape, dtype, device, backend):
    configs = _default_bwd_configs(shape, dtype, device, backend)
    for name, kernel_id in TUNED_BACKWARD.items():
        tuned = provided_config(kernel_id, shape, dtype, device, backend, SSD_BWD_TUNABLES, elem_bytes(dtype))
        if tuned:
            configs[name] = dict(tuned)
    return configs


def _backward_empty(x, dt, A, B, C, D, z, dt_bias, initial_states):
    bt, length, heads, hdim = x.shape
    state_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return [x.new_empty(x.shape), dt.new_empty(dt.shape), A.new_empty(A.shape), B.new_empty(B.shape),
            C.new_empty(C.shape), D.new_empty(D.shape) if D is not None else x.new_empty(0),
            z.new_empty(z.shape) if z is not None else x.new_empty(0),  # (outputs must not alias)
            dt_bias.new_empty(dt_bias.shape) if dt_bias is not None else x.new_empty(0),
            x.new_empty(bt, heads, hdim, B.shape[3], dtype=state_dtype)]


@torch.library.custom_op("tilekit::ssd_scan_backward", mutates_args=())
def ssd_scan_backward_op(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                         chunk_size: int, D: torch.Tensor | None, z: torch.Tensor | None,
                         dt_bias: torch.Tensor | None, initial_states: torch.Tensor | None,
                         seq_idx: torch.Tensor | None, dt_softplus: bool, dt_min: float, dt_max: float,
                         dy: torch.Tensor, d_final: torch.Tensor) -> list[torch.Tensor]:
    """[dx, ddt, dA, dB, dC, dD, dz, ddt_bias, dinitial_states], each in its input's dtype (dinitial_states
    in the state dtype); the gradient of an absent input is an empty tensor."""
    bt, length, heads, hdim, n = _check(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx,
                                        (dt_min, dt_max))
    grads = _backward_empty(x, dt, A, B, C, D, z, dt_bias, initial_states)
    if length == 0 or x.numel() == 0 or n == 0:
        return _backward_without_kernel(grads, x, D, z, dy, d_final, length)
    state_dtype = grads[8].dtype
    options = dict(D=D, z=z, dt_bias=dt_bias, seq_idx=seq_idx, dt_softplus=dt_softplus, dt_min=dt_min,
                   dt_max=dt_max)
    states, y_pre = chunk_states(x, dt, A, B, C, chunk_size, initial_states=initial_states, **options)
    dx = torch.empty(bt, length, heads, hdim, dtype=state_dtype, device=x.device)
    backend = backend_for(x.device)
    configs = _bwd_configs_for((bt, length, heads, hdim, n, chunk_size), x.dtype, x.device, backend)
    plan, (d_dt, d_a, d_b, d_c, d_d, dz, d_bias, d_init), _ = backward_plan(
        (x, dt, A, B, C, chunk_size, states, y_pre, dy, d_final), dx, configs, **options)
    run_backward_plan(plan, backend)
    for i, g in enumerate((dx, d_dt, d_a, d_b, d_c)):
        grads[i].copy_(g)
    if D is not None:
        grads[5].copy_(d_d)
    if z is not None:
        grads[6].copy_(dz)
    if dt_bias is not None:
        grads[7].copy_(d_bias)
    grads[8].copy_(d_init)
    return grads


def _backward_without_kernel(grads, x, D, z, dy, d_final, length):
    """Gradients where no kernel runs: an empty problem, or N = 0 (y = D x gated by silu(z) only)."""
    for g in grads:
        g.zero_()
    if length == 0:
        grads[8].copy_(d_final)  # final_states is initial_states
        return grads
    if x.numel():
        with torch.enable_grad():
            leaves = [t.detach().float().requires_grad_() if t is not None else None for t in (x, D, z)]
            y = _skip_only(*leaves)
            used = [t for t in leaves if t is not None]
            got = torch.autograd.grad(y, used, dy.float(), allow_unused=True)
        got = dict(zip([i for i, t in enumerate(leaves) if t is not None], got))
        for index, slot in ((0, 0), (1, 5), (2, 6)):
            if got.get(index) is not None:
                grads[slot].copy_(got[index])
    return grads


@ssd_scan_backward_op.register_fake
def _backward_fake(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, dt_softplus, dt_min,
                   dt_max, dy, d_final):
    _check(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, (dt_min, dt_max))
    return _backward_empty(x, dt, A, B, C, D, z, dt_bias, initial_states)


def _setup_context(ctx, inputs, output):
    (x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, dt_softplus, dt_min, dt_max) = inputs
    ctx.options = (chunk_size, bool(dt_softplus), dt_min, dt_max)
    ctx.has = (D is not None, z is not None, dt_bias is not None, initial_states is not None)
    ctx.save_for_backward(x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx)


def _backward(ctx, dy, d_final):
    x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx = ctx.saved_tensors
    chunk_size, dt_softplus, dt_min, dt_max = ctx.options
    dy = dy.contiguous() if dy is not None else torch.zeros_like(x)
    bt, length, heads, hdim = x.shape
    state_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    d_final = (d_final.to(state_dtype).contiguous() if d_final is not None
               else x.new_zeros(bt, heads, hdim, B.shape[3], dtype=state_dtype))
    dx, d_dt, d_a, d_b, d_c, d_d, d_z, d_bias, d_init = torch.ops.tilekit.ssd_scan_backward(
        x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, dt_softplus, dt_min, dt_max, dy,
        d_final)
    has_d, has_z, has_bias, has_init = ctx.has
    return (dx, d_dt, d_a, d_b, d_c, None, d_d if has_d else None, d_z if has_z else None,
            d_bias if has_bias else None, d_init.to(initial_states.dtype) if has_init else None,
            None, None, None, None)


ssd_scan_op.register_autograd(_backward, setup_context=_setup_context)


def ssd_scan(x, dt, A, B, C, chunk_size, *, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
             dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False):
    """Mamba-2 SSD. Returns y (Bt, L, H, P) in x's dtype, and (y, final_states (Bt, H, P, N) fp32) with
    return_final_states. Differentiable in x, dt, A, B, C, D, z, dt_bias and initial_states, through y and
    final_states."""
    y, final = torch.ops.tilekit.ssd_scan(x, dt, A, B, C, int(chunk_size), D, z, dt_bias, initial_states, seq_idx,
                                          bool(dt_softplus), float(dt_limit[0]), min(float(dt_limit[1]), 3.0e38))
    return (y, final) if return_final_states else y


def kernel_example(shape=(1, 2048, 80, 64, 128, 256), dtype=torch.float16, device=torch.device("cuda"),
                   backward=False, target=None, kernel="dx"):
    """(kernel, example args, launch kwargs) of the forward (or the backward's ``kernel``, one of
    BACKWARD_KERNELS) at (Bt, L, H, P, N, chunk), one B/C group, D per head, z, dt_bias and softplus (a Mamba-2
    block's call), on meta tensors. ``target`` (``sm_90``, ``gfx942``, ...) picks that architecture's
    defaults, for compiling to it from any machine."""
    bt, length, heads, hdim, n, chunk = shape
    meta = dict(device="meta")
    x = torch.empty(bt, length, heads, hdim, dtype=dtype, **meta)
    dt = torch.empty(bt, length, heads, dtype=dtype, **meta)
    A = torch.empty(heads, dtype=torch.float32, **meta)
    B = torch.empty(bt, length, 1, n, dtype=dtype, **meta)
    D = torch.empty(heads, dtype=torch.float32, **meta)
    final = torch.empty(bt, heads, hdim, n, dtype=torch.float32, **meta)
    device = torch.device(device)
    backend = "reference" if device.type == "cpu" else "triton"
    flags = _flags(D, x, A, None, True, 0.0, 3.0e38)
    if backward:
        configs = _default_bwd_configs(shape, dtype, device, backend, target)
        states = torch.empty(bt, heads, tk.cdiv(length, chunk), hdim, n, dtype=torch.float32, **meta)
        dx = torch.empty(bt, length, heads, hdim, dtype=torch.float32, **meta)
        plan, _, _ = backward_plan((x, dt, A, B, B, chunk, states, dx, x, final), dx, configs, D=D, z=x,
                                   dt_bias=A, dt_softplus=True)
        k, _, args, kwargs = plan[kernel]
        return k, args, kwargs
    config = _default_config(shape, dtype, device, backend, target)
    args = (x, dt, A, B, B, D, x, A, final, A, x, final, final, heads, 0.0, 3.0e38)
    kwargs = dict(Q=chunk, S=min(config["BQ"], chunk), BP=config["BP"], BN=clamp_pow2(n, 1, 256), HAS_INIT=False,
                  SAVE_STATES=False, DOT=dot_dtype(dtype), ACC=_acc(dtype), num_warps=config["num_warps"], num_stages=config["num_stages"], **flags)
    return ssd_scan_fwd_kernel, args, kwargs
