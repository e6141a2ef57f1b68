"""The SSM family's DSL kernels and their tunables.

``selective_scan_fwd_kernel``: Mamba-1's selective scan. One program per (batch, block of ``BD`` channels).
A ``tk.range`` loop walks L in chunks of ``BL`` steps and carries the state in ACC (fp32; fp64 for fp64 inputs) (BD x BN). Within a chunk
the recurrence ``x_t = exp(dt_t A) x_{t-1} + dt_t B_t u_t`` is a ``tk.associative_scan`` over the pairs
``(exp(dt A), dt B u)``; the carried state enters as ``x_t = prod(a) * x_in + scan(b)``.

B and C reach the kernel as 4-D ``(Bt, G, N, L)`` views (the wrapper makes fixed and variable B/C that
shape with stride-0 dims), and channel ``d`` reads group ``d // group_size``: one code path for fixed,
variable and grouped B/C.
"""
import tilekit as tk

# fp32 values each thread may hold for one chunk: the (BD, BN, BL) scan operands and results (4 tiles).
MAX_SCAN_VALUES_PER_THREAD = 128


def _scan_config_rule(config):
    """Valid if one chunk's (BD, BN, BL) scan tiles spread over the warps fit a register budget. BN is the
    state size rounded up to a power of two; without it in the config (tuning space checks) it is 16,
    Mamba-1's N."""
    bn = config.get("BN", 16)
    per_thread = config["BD"] * bn * config["BL"] // (32 * config["num_warps"])
    if per_thread > MAX_SCAN_VALUES_PER_THREAD:
        return (f"a ({config['BD']}, {bn}, {config['BL']}) chunk over {config['num_warps']} warps is "
                f"{per_thread} values per thread, more than {MAX_SCAN_VALUES_PER_THREAD}")
    return True


SELECTIVE_SCAN_TUNABLES = tk.Tunables(
    {
        "BD": [1, 2, 4, 8, 16, 32],
        "BL": [8, 16, 32, 64, 128, 256],
        "num_warps": [1, 2, 4, 8],
        "num_stages": [1, 2, 3],
    },
    valid=_scan_config_rule,
    default={"BD": 4, "BL": 32, "num_warps": 4, "num_stages": 1},
)


@tk.func
def linear_recurrence_combine(a_left, b_left, a_right, b_right):
    """Compose two steps of x -> a x + b: left first, then right."""
    return a_left * a_right, b_left * a_right + b_right


@tk.func
def group_rows(d0, dim, group_size, groups, BD: tk.constexpr):
    """The B/C group of each channel d0 .. d0+BD-1 (channels past ``dim`` clamp to a valid group)."""
    channel = tk.minimum(d0 + tk.arange(BD), dim - 1)
    return tk.minimum(channel // group_size, groups - 1)


@tk.kernel(tunables=SELECTIVE_SCAN_TUNABLES)
def selective_scan_fwd_kernel(U, Delta, A, Bg, Cg, Dskip, Z, DeltaBias, Init, Out, LastState, Checkpoints,
                              b_group_size, c_group_size,
                              BD: tk.constexpr, BN: tk.constexpr, BL: tk.constexpr,
                              HAS_D: tk.constexpr, HAS_Z: tk.constexpr, HAS_BIAS: tk.constexpr,
                              SOFTPLUS: tk.constexpr, HAS_INIT: tk.constexpr, SAVE_CHECKPOINTS: tk.constexpr,
                              ACC: tk.constexpr):
    """Out = selective_scan(U, Delta, A, B, C) for channels d0 .. d0+BD-1 of batch row b.

    LastState (Bt, Dm, N) gets the state after the last step. With SAVE_CHECKPOINTS, Checkpoints
    (Bt, Dm, chunks, N) gets the state entering each BL-step chunk, which the backward recomputes from.
    """
    batch, dim, length = U.shape
    b = tk.program_id(0)
    d0 = tk.program_id(1) * BD
    a = tk.load(A, (d0, 0), (BD, BN)).to(ACC)  # columns past N read 0: exp(0) = 1, and B is 0 there
    b_groups = group_rows(d0, dim, b_group_size, Bg.shape[1], BD)
    c_groups = group_rows(d0, dim, c_group_size, Cg.shape[1], BD)
    if HAS_BIAS:
        bias = tk.load(DeltaBias, (d0,), (BD,)).to(ACC)
    if HAS_D:
        skip = tk.load(Dskip, (d0,), (BD,)).to(ACC)
    if HAS_INIT:
        state = tk.load(Init, (b, d0, 0), (1, BD, BN)).reshape((BD, BN)).to(ACC)
    else:
        state = tk.zeros((BD, BN), ACC)
    for t0 in tk.range(0, length, BL):
        if SAVE_CHECKPOINTS:
            tk.store(Checkpoints, (b, d0, t0 // BL, 0), state.reshape((1, BD, 1, BN)))
        in_sequence = ((t0 + tk.arange(BL)) < length)[None, None, :]
        u = tk.load(U, (b, d0, t0), (1, BD, BL)).reshape((BD, BL)).to(ACC)
        dt = tk.load(Delta, (b, d0, t0), (1, BD, BL)).reshape((BD, BL)).to(ACC)
        if HAS_BIAS:
            dt = dt + bias[:, None]
        if SOFTPLUS:
            dt = tk.softplus(dt)
        bt = tk.load(Bg, (b, b_groups, 0, t0), (1, BD, BN, BL)).reshape((BD, BN, BL)).to(ACC)
        ct = tk.load(Cg, (b, c_groups, 0, t0), (1, BD, BN, BL)).reshape((BD, BN, BL)).to(ACC)
        # steps past the end are the identity (a = 1, b = 0), so the chunk's last column is the final state
        decay = tk.where(in_sequence, tk.exp(dt[:, None, :] * a[:, :, None]), 1.0)
        drive = (dt * u)[:, None, :] * bt
        decay_prefix, drive_prefix = tk.associative_scan((decay, drive), 2, linear_recurrence_combine)
        states = decay_prefix * state[:, :, None] + drive_prefix
        y = tk.sum(states * ct, axis=1)
        if HAS_D:
            y = y + u * skip[:, None]
        if HAS_Z:
            z = tk.load(Z, (b, d0, t0), (1, BD, BL)).reshape((BD, BL)).to(ACC)
            y = y * (z * tk.sigmoid(z))
        tk.store(Out, (b, d0, t0), y.reshape((1, BD, BL)))
        state = states[:, :, BL - 1]
    tk.store(LastState, (b, d0, 0), state.reshape((1, BD, BN)))
