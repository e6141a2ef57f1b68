"""The SSM family's tuning declarations (``tilekit.autotune.protocol``): ``selective_scan.fwd/.bwd`` (shape tuple
``Bt,Dm,L,N``), ``ssd_scan.fwd/.bwd`` (``Bt,L,H,P,N,chunk``), ``selective_state_update.main`` (``Bt,Dm,N``) and
``ssd_state_update.main`` (``Bt,H,P,N``).

``selective_scan.fwd`` and ``selective_scan.bwd`` are tuned each on its own, at Mamba-style problems: variable
B/C (Bt, N, L), D, z, delta_bias and softplus, as a Mamba block calls the scan.
"""
import torch

from ...autotune.protocol import TuneKernel, register
from ...tolerances import op_table
from . import op
from .kernels import selective_scan_bwd_chunk_kernel, selective_scan_fwd_kernel

# GPU: Mamba-130M (d_inner 1536) and Mamba-2.8B (d_inner 5120) prefill, N = 16; CPU (PoCL): ms-sized problems.
DEFAULT_SHAPES = {"gpu": [(1, 1536, 2048, 16), (1, 5120, 2048, 16), (8, 5120, 512, 16)],
                  "cpu": [(1, 64, 256, 16), (2, 128, 128, 16)]}


def make_forward_inputs(shape, dtype, generator):
    bt, dm, length, n = shape

    def randn(*s, scale=1.0):
        return torch.randn(*s, generator=generator) * scale

    u = randn(bt, dm, length).to(dtype)
    delta = (randn(bt, dm, length, scale=0.5) - 1.0).to(dtype)
    A = -torch.rand(dm, n, generator=generator) * 4 - 0.5
    B = randn(bt, n, length).to(dtype)
    C = randn(bt, n, length).to(dtype)
    D = randn(dm)
    z = randn(bt, dm, length).to(dtype)
    delta_bias = randn(dm, scale=0.3)
    return (u, delta, A, B, C, D, z, delta_bias)


def forward_reference(u, delta, A, B, C, D, z, delta_bias):
    return op.selective_scan_reference(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=True)


def forward_launch_args(inputs, out, config):
    u, delta, A, B, C, D, z, delta_bias = inputs
    return op.launch_args((u, delta, A, B, C), out, config, D=D, z=z, delta_bias=delta_bias, delta_softplus=True)


def make_backward_inputs(shape, dtype, generator):
    """The forward's inputs, its checkpoints (from a forward on the reference backend), the adjoints entering each
    chunk (the backward's first pass, on the reference backend) and an upstream grad: the tuned kernel is the
    second pass."""
    inputs = make_forward_inputs(shape, dtype, generator)
    dout = torch.randn(inputs[0].shape, generator=generator).to(dtype)
    with torch.no_grad():
        from ..dispatch import use_backend
        with use_backend("reference"):
            _, _, checkpoints = torch.ops.tilekit.selective_scan(*inputs[:5], inputs[5], inputs[6], inputs[7], None,
                                                                 True)
        adjoints, _ = op.run_bwd_adjoint((*inputs, checkpoints, dout),
                                         op._default_bwd_config(shape, dtype, torch.device("cpu")), "reference")
    return (*inputs, checkpoints, adjoints, dout)


def backward_reference(u, delta, A, B, C, D, z, delta_bias, checkpoints, adjoints, dout):
    """du from autograd of the float64 recurrence."""
    u64 = u.double().requires_grad_()
    out = op.selective_scan_reference(u64, delta.double(), A.double(), B.double(), C.double(), D=D.double(),
                                      z=z.double(), delta_bias=delta_bias.double(), delta_softplus=True)
    (du,) = torch.autograd.grad(out, u64, dout.double())
    return du.to(op._state_dtype(u.dtype))


def backward_make_output(inputs):
    return torch.empty(inputs[0].shape, dtype=op._state_dtype(inputs[0].dtype))


def backward_launch_args(inputs, out, config):
    return op.bwd_launch_args(inputs, out, config, delta_softplus=True)


FORWARD = register(TuneKernel(
    id="selective_scan.fwd", kernel=selective_scan_fwd_kernel, shape_names=("Bt", "Dm", "L", "N"),
    make_inputs=make_forward_inputs, make_output=lambda inputs: torch.empty_like(inputs[0]),
    launch_args=forward_launch_args, reference=forward_reference, default_config=op._default_config,
    default_shapes=DEFAULT_SHAPES,
))

BACKWARD = register(TuneKernel(
    id="selective_scan.bwd", kernel=selective_scan_bwd_chunk_kernel, shape_names=("Bt", "Dm", "L", "N"),
    make_inputs=make_backward_inputs, make_output=backward_make_output, launch_args=backward_launch_args,
    reference=backward_reference, default_config=op._default_bwd_config, default_shapes=DEFAULT_SHAPES,
))



# ---- ssd_scan (shape tuple Bt,L,H,P,N,chunk; chunk_size is the caller's, never tuned) ----------------------

from . import ssd  # noqa: E402
from .kernels import ssd_bwd_dc_kernel, ssd_bwd_dstate_kernel, ssd_bwd_dx_kernel, ssd_scan_fwd_kernel  # noqa: E402

SSD_SHAPES = {"gpu": [(1, 2048, 80, 64, 128, 256), (4, 1024, 80, 64, 128, 256)],
              "cpu": [(1, 128, 4, 16, 16, 32), (2, 64, 2, 32, 32, 16)]}


def make_ssd_inputs(shape, dtype, generator):
    bt, length, heads, hdim, n, chunk = shape
    x = torch.randn(bt, length, heads, hdim, generator=generator).to(dtype)
    dt = (torch.rand(bt, length, heads, generator=generator) - 1.5).to(dtype)
    A = -(torch.rand(heads, generator=generator) * 2 + 0.3)
    B = torch.randn(bt, length, 1, n, generator=generator).to(dtype)
    C = torch.randn(bt, length, 1, n, generator=generator).to(dtype)
    # the tuner moves every input with .to(device): chunk_size rides as the width of an empty tensor
    return (x, dt, A, B, C, torch.empty(0, chunk))


def ssd_reference(x, dt, A, B, C, chunk_marker):
    """The float64 sequential recurrence (softplus on dt, no D/z)."""
    f = torch.float64
    dtp = torch.nn.functional.softplus(dt.to(f))
    heads = x.shape[2]
    Bh, Ch = (t.to(f).repeat_interleave(heads // t.shape[2], 2) for t in (B, C))
    state = x.new_zeros(x.shape[0], heads, x.shape[3], B.shape[3], dtype=f)
    ys = []
    for t in range(x.shape[1]):
        state = torch.exp(dtp[:, t] * A.to(f))[:, :, None, None] * state + \
            (dtp[:, t, :, None] * x[:, t].to(f))[..., None] * Bh[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ch[:, t]))
    return torch.stack(ys, 1).to(x.dtype)


def ssd_launch_args(inputs, out, config):
    x, dt, A, B, C, chunk_marker = inputs
    chunk = chunk_marker.shape[1]
    bt, length, heads, hdim = x.shape
    n = B.shape[3]
    final = torch.empty(bt, heads, hdim, n, dtype=torch.float32, device=x.device)
    args = (x, dt, A, B, C, A, x, A, final, A, out, final, final, heads // B.shape[2], 0.0, 3.0e38)
    kwargs = dict(Q=chunk, S=min(config["BQ"], chunk), DOT=ssd.dot_dtype(x.dtype), BP=config["BP"], BN=op.clamp_pow2(n, 1, 256), HAS_D=False, D_PER_P=False, HAS_Z=False,
                  HAS_BIAS=False, SOFTPLUS=True, CLAMP=False, HAS_INIT=False, HAS_SEQ=False, SAVE_STATES=False,
                  ACC=op._acc(x.dtype), num_warps=config["num_warps"], num_stages=config["num_stages"])
    return (bt, heads, -(-hdim // config["BP"])), args, kwargs


SSD_FORWARD = register(TuneKernel(
    id="ssd_scan.fwd", kernel=ssd_scan_fwd_kernel, shape_names=("Bt", "L", "H", "P", "N", "chunk"),
    make_inputs=make_ssd_inputs, make_output=lambda inputs: torch.empty_like(inputs[0]),
    launch_args=ssd_launch_args, reference=ssd_reference, default_config=ssd._default_config,
    default_shapes=SSD_SHAPES,
))


def make_ssd_backward_inputs(shape, dtype, generator):
    """The forward's inputs, its chunk states and pre-gate output, upstream gradients, the state gradients
    (the dstate kernel on the reference backend), then the buffers the tuned kernels add into atomically
    (re-zeroed before each launch by ``_zero_backward_buffers``): (x, dt, A, B, C, chunk_marker, states, y_pre,
    dy, d_final, d_states, dB, dC, d_cum, ddt_direct)."""
    x, dt, A, B, C, chunk_marker = make_ssd_inputs(shape, dtype, generator)
    chunk = chunk_marker.shape[1]
    from ..dispatch import use_backend
    dy = torch.randn(x.shape, generator=generator).to(dtype)
    with torch.no_grad(), use_backend("reference"):
        states, y_pre = ssd.chunk_states(x, dt, A, B, C, chunk, dt_softplus=True)
        d_final = torch.randn(states[:, :, 0].shape, generator=generator)
        dx = torch.empty(x.shape)
        plan, grads, scratch = ssd.backward_plan((x, dt, A, B, C, chunk, states, y_pre, dy, d_final), dx,
                                                 ssd._default_bwd_configs(shape, dtype, torch.device("cpu")),
                                                 dt_softplus=True)
        ssd.run_backward_plan(plan, "reference", ("gate", "dstate"))
    d_states, d_cum = scratch[1], scratch[2]
    return (x, dt, A, B, C, chunk_marker, states, y_pre, dy, d_final, d_states, torch.zeros(B.shape), torch.zeros(C.shape), torch.zeros_like(d_cum), torch.zeros_like(d_cum))


def _ssd_backward_autograd(x, dt, A, B, C, dy, d_final):
    """(dx, dC, d initial state) from autograd of the float64 recurrence (softplus on dt, zero initial state),
    through y and the final state."""
    f = torch.float64
    x64, C64 = x.double().requires_grad_(), C.double().requires_grad_()
    dtp = torch.nn.functional.softplus(dt.to(f))
    heads = x.shape[2]
    Bh, Ch = (t.to(f).repeat_interleave(heads // t.shape[2], 2) for t in (B, C64))
    init = x.new_zeros(x.shape[0], heads, x.shape[3], B.shape[3], dtype=f).requires_grad_()
    state = init
    ys = []
    for t in range(x.shape[1]):
        state = torch.exp(dtp[:, t] * A.to(f))[:, :, None, None] * state + \
            (dtp[:, t, :, None] * x64[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ch[:, t]))
    return torch.autograd.grad((torch.stack(ys, 1), state), (x64, C64, init), (dy.double(), d_final.double()))


def ssd_backward_reference(x, dt, A, B, C, chunk_marker, states, y_pre, dy, d_final, *rest):
    """dx (the dx kernel's gate)."""
    return _ssd_backward_autograd(x, dt, A, B, C, dy, d_final)[0].float()


def ssd_backward_dc_reference(x, dt, A, B, C, chunk_marker, states, y_pre, dy, d_final, *rest):
    return _ssd_backward_autograd(x, dt, A, B, C, dy, d_final)[1].float()


def ssd_backward_dinit_reference(x, dt, A, B, C, chunk_marker, states, y_pre, dy, d_final, *rest):
    return _ssd_backward_autograd(x, dt, A, B, C, dy, d_final)[2].float()


def _ssd_backward_plan(inputs, out, config, name):
    x, dt, A, B, C, chunk_marker, states, y_pre, dy, d_final, d_states, d_b, d_c, d_cum, d_dt_direct = inputs
    bt, length, heads, hdim = x.shape
    chunk = chunk_marker.shape[1]
    configs = {**ssd._default_bwd_configs(tuple(x.shape) + (B.shape[3], chunk), x.dtype, x.device), name: config}
    dx = out if name == "dx" else torch.empty(x.shape, device=x.device)
    if name == "dc":
        d_c = out
    d_init = out if name == "dstate" else torch.empty(states[:, :, 0].shape, device=x.device)
    grads = (None, None, d_b, d_c, None, None, None, d_init)
    scratch = (dy, d_states, d_cum, d_dt_direct)
    plan, _, _ = ssd.backward_plan((x, dt, A, B, C, chunk, states, y_pre, dy, d_final), dx, configs,
                                   dt_softplus=True, grads=grads, scratch=scratch)
    _, grid, args, kwargs = plan[name]
    return grid, args, kwargs


def _zero_backward_buffers(name):
    """before_launch: each gated or timed launch adds into freshly zeroed buffers, as the op's do."""
    def before(inputs, out, config, backend):
        for buffer in inputs[11:]:
            buffer.zero_()
        if name == "dc":
            out.zero_()
    return before


def _backward_kernel(kernel_id, name, kernel, make_output, reference):
    return register(TuneKernel(
        id=kernel_id, kernel=kernel, shape_names=("Bt", "L", "H", "P", "N", "chunk"),
        make_inputs=make_ssd_backward_inputs, make_output=make_output,
        launch_args=lambda inputs, out, config: _ssd_backward_plan(inputs, out, config, name),
        reference=reference, default_config=lambda shape, dtype, device: ssd._default_bwd_config(
            shape, dtype, device, kernel=name),
        default_shapes=SSD_SHAPES, tolerances=op_table("ssm", "BACKWARD"), before_launch=_zero_backward_buffers(name),
    ))


SSD_BACKWARD = _backward_kernel("ssd_scan.bwd", "dx", ssd_bwd_dx_kernel,
                                lambda inputs: torch.empty(inputs[0].shape, device=inputs[0].device),
                                ssd_backward_reference)
SSD_BACKWARD_DC = _backward_kernel("ssd_scan.bwd_dc", "dc", ssd_bwd_dc_kernel,
                                   lambda inputs: torch.zeros(inputs[4].shape, device=inputs[0].device),
                                   ssd_backward_dc_reference)
SSD_BACKWARD_DSTATE = _backward_kernel("ssd_scan.bwd_dstate", "dstate", ssd_bwd_dstate_kernel,
                                       lambda inputs: torch.empty(inputs[6][:, :, 0].shape, device=inputs[0].device),
                                       ssd_backward_dinit_reference)


# ---- the decode steps: selective_state_update (Bt,Dm,N) and ssd_state_update (Bt,H,P,N) ---------------
# The state cache is S = Bt rows picked through a permuted state_batch_indices (continuous batching). The
# kernel advances its state in place: launch_args hands it a copy, so the inputs (and the gate's reference)
# keep the state as drawn.

from . import state_update  # noqa: E402

STATE_UPDATE_SHAPES = {"gpu": [(1, 5120, 16), (64, 5120, 16), (256, 1536, 16)], "cpu": [(4, 256, 16), (16, 64, 16)]}
SSD_STATE_UPDATE_SHAPES = {"gpu": [(1, 80, 64, 128), (64, 80, 64, 128)], "cpu": [(4, 8, 16, 32), (16, 4, 32, 16)]}


def make_state_update_inputs(shape, dtype, generator):
    bt, dm, n = shape
    state = torch.randn(bt, dm, n, generator=generator)
    x = torch.randn(bt, dm, generator=generator).to(dtype)
    dt = (torch.rand(bt, dm, generator=generator) - 1.5).to(dtype)
    A = -torch.rand(dm, n, generator=generator) * 4 - 0.5
    B = torch.randn(bt, n, generator=generator).to(dtype)
    C = torch.randn(bt, n, generator=generator).to(dtype)
    D = torch.randn(dm, generator=generator)
    z = torch.randn(bt, dm, generator=generator).to(dtype)
    dt_bias = torch.randn(dm, generator=generator) * 0.3
    slots = torch.randperm(bt, generator=generator).to(torch.int32)
    return (state, x, dt, A, B, C, D, z, dt_bias, slots)


def state_update_reference(state, x, dt, A, B, C, D, z, dt_bias, slots):
    f = torch.float64
    dtp = torch.nn.functional.softplus(dt.to(f) + dt_bias.to(f))
    new = torch.exp(dtp[..., None] * A.to(f)) * state[slots.long()].to(f) + (dtp * x.to(f))[..., None] * \
        B.to(f)[:, None, :]
    y = (new * C.to(f)[:, None, :]).sum(-1) + D.to(f) * x.to(f)
    return (y * torch.nn.functional.silu(z.to(f))).to(x.dtype)


def state_update_launch_args(inputs, out, config):
    state, x, dt, A, B, C, D, z, dt_bias, slots = inputs
    return state_update.launch_args((state.clone(), x, dt, A, B, C, D, z, dt_bias, True, slots), out, config)


def make_ssd_state_update_inputs(shape, dtype, generator):
    bt, heads, hdim, n = shape
    state = torch.randn(bt, heads, hdim, n, generator=generator)
    x = torch.randn(bt, heads, hdim, generator=generator).to(dtype)
    dt = (torch.rand(bt, heads, generator=generator) - 1.5).to(dtype)
    A = -(torch.rand(heads, generator=generator) * 2 + 0.3)
    B = torch.randn(bt, 1, n, generator=generator).to(dtype)
    C = torch.randn(bt, 1, n, generator=generator).to(dtype)
    D = torch.randn(heads, generator=generator)
    z = torch.randn(bt, heads, hdim, generator=generator).to(dtype)
    dt_bias = torch.randn(heads, generator=generator) * 0.3
    slots = torch.randperm(bt, generator=generator).to(torch.int32)
    return (state, x, dt, A, B, C, D, z, dt_bias, slots)


def ssd_state_update_reference(state, x, dt, A, B, C, D, z, dt_bias, slots):
    f = torch.float64
    dtp = torch.nn.functional.softplus(dt.to(f) + dt_bias.to(f))[..., None, None]
    new = torch.exp(dtp * A.to(f)[:, None, None]) * state[slots.long()].to(f) + \
        dtp * x.to(f)[..., None] * B.to(f)[:, :1, None, :]
    y = (new * C.to(f)[:, :1, None, :]).sum(-1) + D.to(f)[:, None] * x.to(f)
    return (y * torch.nn.functional.silu(z.to(f))).to(x.dtype)


def ssd_state_update_launch_args(inputs, out, config):
    state, x, dt, A, B, C, D, z, dt_bias, slots = inputs
    return state_update.ssd_update_launch_args((state.clone(), x, dt, A, B, C, D, z, dt_bias, True, slots), out,
                                               config)


STATE_UPDATE = register(TuneKernel(
    id="selective_state_update.main", kernel=state_update.selective_state_update_kernel,
    shape_names=("Bt", "Dm", "N"), make_inputs=make_state_update_inputs,
    make_output=lambda inputs: torch.empty_like(inputs[1]), launch_args=state_update_launch_args,
    reference=state_update_reference, default_config=state_update._default_config,
    default_shapes=STATE_UPDATE_SHAPES, tolerances=op_table("ssm", "FORWARD"),
))

SSD_STATE_UPDATE = register(TuneKernel(
    id="ssd_state_update.main", kernel=state_update.ssd_state_update_kernel, shape_names=("Bt", "H", "P", "N"),
    make_inputs=make_ssd_state_update_inputs, make_output=lambda inputs: torch.empty_like(inputs[1]),
    launch_args=ssd_state_update_launch_args, reference=ssd_state_update_reference,
    default_config=state_update._ssd_default_config, default_shapes=SSD_STATE_UPDATE_SHAPES,
    tolerances=op_table("ssm", "FORWARD"),
))
