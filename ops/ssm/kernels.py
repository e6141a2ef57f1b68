"""The SSM family's DSL kernels and their tunables.

``selective_scan_fwd_kernel``: Mamba-1's selective scan. One program per (batch, block of ``BD`` channels).
A ``tk.range`` loop walks L in chunks of ``BL`` steps and carries the state in ACC (fp32; fp64 for fp64 inputs) (BD x BN). Within a chunk
the recurrence ``x_t = exp(dt_t A) x_{t-1} + dt_t B_t u_t`` is a ``tk.associative_scan`` over the pairs
``(exp(dt A), dt B u)``; the carried state enters as ``x_t = prod(a) * x_in + scan(b)``.

B and C reach the kernel as 4-D ``(Bt, G, N, L)`` views (the wrapper makes fixed and variable B/C that
shape with stride-0 dims), and channel ``d`` reads group ``d // group_size``: one code path for fixed,
variable and grouped B/C.

``selective_scan_bwd_adjoint_kernel`` and ``selective_scan_bwd_chunk_kernel``: its backward from per-chunk
checkpoints, in two passes (the reverse-time adjoint carried across chunks, then each chunk's gradients).
``selective_state_update_kernel`` and ``ssd_state_update_kernel``: the Mamba-1 / Mamba-2 decode steps. ``ssd_scan_fwd_kernel``: Mamba-2's SSD
chunked scan, each chunk walked in (BQ, BQ) sub-chunk blocks; its backward is five kernels, ``ssd_bwd_gate_kernel``,
``ssd_bwd_dstate_kernel``, ``ssd_bwd_dx_kernel``, ``ssd_bwd_dc_kernel`` and ``ssd_bwd_dt_kernel`` (README.md).
"""
import tilekit as tk

# The forward saves the state every CHECKPOINT_STEPS steps; the backward recomputes each such chunk from it.
# A constant (not a tunable) so the checkpoints' shape is known from L alone (fake tensors, dynamic shapes).
CHECKPOINT_STEPS = 64

# fp32 values each thread may hold for one chunk: the (BD, BN, BL) scan operands and results (4 tiles).
MAX_SCAN_VALUES_PER_THREAD = 128


def _scan_config_rule(config):
    """Valid if one chunk's (BD, BN, BL) scan tiles spread over the warps fit a register budget. BN is the
    state size rounded up to a power of two; without it in the config (tuning space checks) it is 16,
    Mamba-1's N."""
    bn = config.get("BN", 16)
    per_thread = config["BD"] * bn * config.get("BL", CHECKPOINT_STEPS) // (32 * config["num_warps"])
    if per_thread > MAX_SCAN_VALUES_PER_THREAD:
        return (f"a ({config['BD']}, {bn}, {config.get('BL', CHECKPOINT_STEPS)}) chunk over {config['num_warps']} warps is "
                f"{per_thread} values per thread, more than {MAX_SCAN_VALUES_PER_THREAD}")
    return True


SELECTIVE_SCAN_TUNABLES = tk.Tunables(
    {
        "BD": [1, 2, 4, 8, 16, 32],
        "BL": [8, 16, 32, 64],  # divides CHECKPOINT_STEPS
        "num_warps": [1, 2, 4, 8],
        "num_stages": [1, 2, 3],
    },
    valid=_scan_config_rule,
    default={"BD": 4, "BL": 32, "num_warps": 4, "num_stages": 1},
)


# the backward's chunk is CHECKPOINT_STEPS, the forward's checkpoint interval: only the channel block and
# the launch options are its own
SELECTIVE_SCAN_BWD_TUNABLES = tk.Tunables(
    {"BD": [1, 2, 4, 8, 16], "num_warps": [1, 2, 4, 8], "num_stages": [1, 2, 3]},
    valid=_scan_config_rule,
    default={"BD": 2, "num_warps": 4, "num_stages": 1},
)


@tk.func
def linear_recurrence_combine(a_left, b_left, a_right, b_right):
    """Compose two steps of x -> a x + b: left first, then right."""
    return a_left * a_right, b_left * a_right + b_right


@tk.func
def softplus(x):
    """log(1 + exp(x)), x above 20 as is (PyTorch's threshold). Written out because tk.softplus rounds
    through fp32 for float64 tiles (tests/ops/ssm/test_ssm_dsl_needs.py)."""
    return tk.where(x > 20.0, x, tk.log(1.0 + tk.exp(tk.minimum(x, 20.0))))


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
    (Bt, Dm, cdiv(L, CHECKPOINT_STEPS), N) gets the state entering each CHECKPOINT_STEPS-step chunk, which the backward recomputes from.
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
            if t0 % CHECKPOINT_STEPS == 0:
                tk.store(Checkpoints, (b, d0, t0 // CHECKPOINT_STEPS, 0), state.reshape((1, BD, 1, BN)))
        in_sequence = ((t0 + tk.arange(BL)) < length)[None, None, :]
        u = tk.load(U, (b, d0, t0), (1, BD, BL)).reshape((BD, BL)).to(ACC)
        dt = tk.load(Delta, (b, d0, t0), (1, BD, BL)).reshape((BD, BL)).to(ACC)
        if HAS_BIAS:
            dt = dt + bias[:, None]
        if SOFTPLUS:
            dt = softplus(dt)
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


@tk.func
def chunk_deltas(Delta, DeltaBias, b, d0, t, length, bias, BD: tk.constexpr, BL: tk.constexpr,
                 HAS_BIAS: tk.constexpr, SOFTPLUS: tk.constexpr, ACC: tk.constexpr):
    """(delta before softplus, delta after bias and softplus) for steps t .. t+BL-1 of channels d0 .."""
    raw = tk.load(Delta, (b, d0, t), (1, BD, BL)).reshape((BD, BL)).to(ACC)
    if HAS_BIAS:
        raw = raw + bias[:, None]
    dt = raw
    if SOFTPLUS:
        dt = softplus(raw)
    return raw, dt


@tk.kernel(tunables=SELECTIVE_SCAN_BWD_TUNABLES)
def selective_scan_bwd_adjoint_kernel(Delta, A, Cg, Z, DeltaBias, Dout, Adjoints, DInit, c_group_size,
                                      BD: tk.constexpr, BN: tk.constexpr, BL: tk.constexpr,
                                      HAS_Z: tk.constexpr, HAS_BIAS: tk.constexpr, SOFTPLUS: tk.constexpr,
                                      ACC: tk.constexpr):
    """The backward's first pass, channels d0 .. d0+BD-1 of batch row b, chunks in reverse: the adjoint
    g_t = exp(dt_{t+1} A) g_{t+1} + dy_t C_t needs neither u, B nor the states, so this pass carries it alone
    and saves, per chunk, the g entering from the chunk after (Adjoints (Bt, Dm, chunks, N)); DInit gets
    exp(dt_0 A) g_0."""
    batch, dim, length = Delta.shape
    b = tk.program_id(0)
    d0 = tk.program_id(1) * BD
    a = tk.load(A, (d0, 0), (BD, BN)).to(ACC)
    c_groups = group_rows(d0, dim, c_group_size, Cg.shape[1], BD)
    bias = tk.zeros((BD,), ACC)
    if HAS_BIAS:
        bias = tk.load(DeltaBias, (d0,), (BD,)).to(ACC)
    adjoint = tk.zeros((BD, BN), ACC)       # g at the first step of the chunk after this one
    chunks = tk.cdiv(length, BL)
    for i in tk.range(0, chunks):
        chunk = chunks - 1 - i
        t0 = chunk * BL
        tk.store(Adjoints, (b, d0, chunk, 0), adjoint.reshape((1, BD, 1, BN)))
        next_in_sequence = (t0 + tk.arange(BL) + 1 < length)[None, None, :]
        _, dt_next = chunk_deltas(Delta, DeltaBias, b, d0, t0 + 1, length, bias, BD, BL, HAS_BIAS, SOFTPLUS, ACC)
        ct = tk.load(Cg, (b, c_groups, 0, t0), (1, BD, BN, BL)).reshape((BD, BN, BL)).to(ACC)
        decay_next = tk.where(next_in_sequence, tk.exp(dt_next[:, None, :] * a[:, :, None]), 1.0)
        dy = tk.load(Dout, (b, d0, t0), (1, BD, BL)).reshape((BD, BL)).to(ACC)
        if HAS_Z:
            z = tk.load(Z, (b, d0, t0), (1, BD, BL)).reshape((BD, BL)).to(ACC)
            dy = dy * z * tk.sigmoid(z)
        decay_suffix, adjoint_local = tk.associative_scan((decay_next, dy[:, None, :] * ct), 2,
                                                          linear_recurrence_combine, reverse=True)
        adjoint = adjoint_local[:, :, 0] + decay_suffix[:, :, 0] * adjoint
    _, dt_first = chunk_deltas(Delta, DeltaBias, b, d0, 0, length, bias, BD, BL, HAS_BIAS, SOFTPLUS, ACC)
    tk.store(DInit, (b, d0, 0), (tk.exp(dt_first[:, 0][:, None] * a) * adjoint).reshape((1, BD, BN)))


@tk.kernel(tunables=SELECTIVE_SCAN_BWD_TUNABLES)
def selective_scan_bwd_chunk_kernel(U, Delta, A, Bg, Cg, Dskip, Z, DeltaBias, Checkpoints, Adjoints, Dout,
                                    DU, DDelta, DA, DBg, DCg, DD, DZ, DDeltaBias,
                                    b_group_size, c_group_size,
                                    BD: tk.constexpr, BN: tk.constexpr, BL: tk.constexpr,
                                    HAS_D: tk.constexpr, HAS_Z: tk.constexpr, HAS_BIAS: tk.constexpr,
                                    SOFTPLUS: tk.constexpr, FIXED_B: tk.constexpr, FIXED_C: tk.constexpr,
                                    ACC: tk.constexpr):
    """The backward's second pass: chunk program_id(2) of channels d0 .. of batch row b, independent of the
    other chunks once the adjoint entering from the chunk after (Adjoints) is known. Its states are
    recomputed from the forward's checkpoint, g by a reverse scan; per-step terms use
    exp(dt_t A) x_{t-1} = x_t - dt_t B_t u_t. Sums over steps (dA, dD, d(delta_bias), fixed dB/dC) and over the
    block's channels (variable/grouped dB/dC) are atomic adds."""
    batch, dim, length = U.shape
    b = tk.program_id(0)
    d0 = tk.program_id(1) * BD
    chunk = tk.program_id(2)
    t0 = chunk * BL
    a = tk.load(A, (d0, 0), (BD, BN)).to(ACC)
    b_groups = group_rows(d0, dim, b_group_size, Bg.shape[1], BD)
    c_groups = group_rows(d0, dim, c_group_size, Cg.shape[1], BD)
    bias = tk.zeros((BD,), ACC)
    if HAS_BIAS:
        bias = tk.load(DeltaBias, (d0,), (BD,)).to(ACC)
    skip = tk.zeros((BD,), ACC)
    if HAS_D:
        skip = tk.load(Dskip, (d0,), (BD,)).to(ACC)
    state = tk.load(Checkpoints, (b, d0, chunk, 0), (1, BD, 1, BN)).reshape((BD, BN)).to(ACC)
    adjoint = tk.load(Adjoints, (b, d0, chunk, 0), (1, BD, 1, BN)).reshape((BD, BN)).to(ACC)
    steps = t0 + tk.arange(BL)
    in_sequence = (steps < length)[None, None, :]
    next_in_sequence = (steps + 1 < length)[None, None, :]
    u = tk.load(U, (b, d0, t0), (1, BD, BL)).reshape((BD, BL)).to(ACC)
    raw, dt = chunk_deltas(Delta, DeltaBias, b, d0, t0, length, bias, BD, BL, HAS_BIAS, SOFTPLUS, ACC)
    _, dt_next = chunk_deltas(Delta, DeltaBias, b, d0, t0 + 1, length, bias, BD, BL, HAS_BIAS, SOFTPLUS, ACC)
    bt = tk.load(Bg, (b, b_groups, 0, t0), (1, BD, BN, BL)).reshape((BD, BN, BL)).to(ACC)
    ct = tk.load(Cg, (b, c_groups, 0, t0), (1, BD, BN, BL)).reshape((BD, BN, BL)).to(ACC)
    decay = tk.where(in_sequence, tk.exp(dt[:, None, :] * a[:, :, None]), 1.0)
    decay_next = tk.where(next_in_sequence, tk.exp(dt_next[:, None, :] * a[:, :, None]), 1.0)
    du_b = (dt * u)[:, None, :]
    drive = du_b * bt
    decay_prefix, drive_prefix = tk.associative_scan((decay, drive), 2, linear_recurrence_combine)
    states = decay_prefix * state[:, :, None] + drive_prefix
    dout = tk.load(Dout, (b, d0, t0), (1, BD, BL)).reshape((BD, BL)).to(ACC)
    dy = dout
    if HAS_Z:
        y = tk.sum(states * ct, axis=1) + u * skip[:, None]
        z = tk.load(Z, (b, d0, t0), (1, BD, BL)).reshape((BD, BL)).to(ACC)
        gate = tk.sigmoid(z)
        tk.store(DZ, (b, d0, t0), (dout * y * gate * (1.0 + z * (1.0 - gate))).reshape((1, BD, BL)))
        dy = dout * z * gate
    decay_suffix, adjoint_local = tk.associative_scan((decay_next, dy[:, None, :] * ct), 2,
                                                      linear_recurrence_combine, reverse=True)
    g = adjoint_local + decay_suffix * adjoint[:, :, None]
    carried = g * (states - drive)          # g_t exp(dt_t A) x_{t-1}
    g_b = tk.sum(g * bt, axis=1)
    d_dt = tk.sum(carried * a[:, :, None], axis=1) + g_b * u
    tk.store(DU, (b, d0, t0), (dy * skip[:, None] + dt * g_b).reshape((1, BD, BL)))
    tk.atomic_add(DA, (d0, 0), tk.sum(carried * dt[:, None, :], axis=2))
    if SOFTPLUS:
        d_dt = d_dt * tk.sigmoid(raw)
    tk.store(DDelta, (b, d0, t0), d_dt.reshape((1, BD, BL)))
    if HAS_BIAS:
        tk.atomic_add(DDeltaBias, (d0,), tk.sum(d_dt, axis=1))
    if HAS_D:
        tk.atomic_add(DD, (d0,), tk.sum(dy * u, axis=1))
    d_b = g * du_b
    d_c = dy[:, None, :] * states
    if FIXED_B:
        tk.atomic_add(DBg, (d0, 0), tk.sum(d_b, axis=2))
    else:
        tk.atomic_add(DBg, (b, d0 // b_group_size, 0, t0), tk.sum(d_b, axis=0).reshape((1, 1, BN, BL)))
    if FIXED_C:
        tk.atomic_add(DCg, (d0, 0), tk.sum(d_c, axis=2))
    else:
        tk.atomic_add(DCg, (b, d0 // c_group_size, 0, t0), tk.sum(d_c, axis=0).reshape((1, 1, BN, BL)))


STATE_UPDATE_TUNABLES = tk.Tunables(
    {"BD": [1, 2, 4, 8, 16, 32, 64], "num_warps": [1, 2, 4, 8]},
    valid=lambda c: c["BD"] * c.get("BN", 16) // (32 * c["num_warps"]) <= MAX_SCAN_VALUES_PER_THREAD
    or "the (BD, BN) state block is more than 128 values per thread",
    default={"BD": 16, "num_warps": 4},
)


@tk.kernel(tunables=STATE_UPDATE_TUNABLES)
def selective_state_update_kernel(State, X, Dt, A, Bg, Cg, Dskip, Z, DtBias, SlotIndices, Out,
                                  b_group_size, c_group_size,
                                  BD: tk.constexpr, BN: tk.constexpr, HAS_D: tk.constexpr, HAS_Z: tk.constexpr,
                                  HAS_BIAS: tk.constexpr, SOFTPLUS: tk.constexpr, HAS_INDICES: tk.constexpr,
                                  ACC: tk.constexpr):
    """One Mamba-1 decode step for channels d0 .. d0+BD-1 of batch row b: State[slot] is read, advanced by
    x_t = exp(dt A) x + dt B u, written back in place, and Out = C x_t + D u (gated by silu(z)). A negative
    slot (a padding row of a continuous batch) is skipped."""
    batch, dim = X.shape
    b = tk.program_id(0)
    d0 = tk.program_id(1) * BD
    slot = b
    if HAS_INDICES:
        slot = tk.load(SlotIndices, (b,))
    # padding rows (slot < 0) are masked off rather than branched around: an `if` on a runtime scalar
    # around stores crashes PoCL's compiler (tests/ops/ssm/test_ssm_dsl_needs.py)
    live = (tk.zeros((BD,), tk.int32) + slot) >= 0
    row = tk.maximum(slot, 0)
    state = tk.load(State, (row, d0, 0), (1, BD, BN), mask=live[None, :, None]).reshape((BD, BN)).to(ACC)
    u = tk.load(X, (b, d0), (1, BD)).reshape((BD,)).to(ACC)
    dt = tk.load(Dt, (b, d0), (1, BD)).reshape((BD,)).to(ACC)
    if HAS_BIAS:
        dt = dt + tk.load(DtBias, (d0,), (BD,)).to(ACC)
    if SOFTPLUS:
        dt = softplus(dt)
    a = tk.load(A, (d0, 0), (BD, BN)).to(ACC)
    bt = tk.load(Bg, (b, group_rows(d0, dim, b_group_size, Bg.shape[1], BD), 0), (1, BD, BN)).reshape((BD, BN))
    ct = tk.load(Cg, (b, group_rows(d0, dim, c_group_size, Cg.shape[1], BD), 0), (1, BD, BN)).reshape((BD, BN))
    state = tk.exp(dt[:, None] * a) * state + (dt * u)[:, None] * bt.to(ACC)
    tk.store(State, (row, d0, 0), state.reshape((1, BD, BN)), mask=live[None, :, None])
    y = tk.sum(state * ct.to(ACC), axis=1)
    if HAS_D:
        y = y + u * tk.load(Dskip, (d0,), (BD,)).to(ACC)
    if HAS_Z:
        z = tk.load(Z, (b, d0), (1, BD)).reshape((BD,)).to(ACC)
        y = y * (z * tk.sigmoid(z))
    tk.store(Out, (b, d0), y.reshape((1, BD)), mask=live[None, :])


def _ssd_config_rule(config):
    """Valid if a (BQ, BQ) intra-chunk tile and the (BP, BN) state each stay within 128 fp32 values per thread
    (BN is 128, Mamba-2's N, when the config does not say)."""
    threads = 32 * config["num_warps"]
    bn = config.get("BN", 128)
    for name, size in (("(BQ, BQ) sub-chunk tile", config.get("BQ", 64) ** 2), ("(BP, BN) state", config["BP"] * bn)):
        if size // threads > MAX_SCAN_VALUES_PER_THREAD:
            return f"the {name} is {size // threads} values per thread, more than {MAX_SCAN_VALUES_PER_THREAD}"
    return True


# BQ: the kernel walks each caller chunk of Q steps in sub-chunks of min(BQ, Q) rows and columns, so the
# quadratic intra-chunk term is (BQ, BQ) tiles whatever the chunk size (a (256, 256) fp32 tile per program
# cannot stay in registers)
SSD_TUNABLES = tk.Tunables(
    {"BP": [8, 16, 32, 64], "BQ": [16, 32, 64, 128], "num_warps": [1, 2, 4, 8], "num_stages": [1, 2, 3]},
    valid=_ssd_config_rule,
    default={"BP": 32, "BQ": 64, "num_warps": 4, "num_stages": 1},
)


@tk.func
def ssd_chunk_dt(Dt, b, t0, h, valid, bias, dt_min, dt_max, Q: tk.constexpr, HAS_BIAS: tk.constexpr,
                 SOFTPLUS: tk.constexpr, CLAMP: tk.constexpr, ACC: tk.constexpr):
    """(dt, d dt / d raw dt) for steps t0 .. t0+Q-1 of head h: bias, softplus, dt_limit clamp; steps past L
    get dt = 0 (decay 1, no input) and slope 0."""
    raw = tk.load(Dt, (b, t0, h), (1, Q, 1)).reshape((Q,)).to(ACC)
    if HAS_BIAS:
        raw = raw + bias
    dt = raw
    slope = tk.where(valid, tk.full((Q,), 1.0, ACC), 0.0)
    if SOFTPLUS:
        dt = softplus(raw)
        slope = slope * tk.sigmoid(raw)
    if CLAMP:
        slope = tk.where((dt >= dt_min) & (dt <= dt_max), slope, 0.0)
        dt = tk.minimum(tk.maximum(dt, dt_min), dt_max)
    return tk.where(valid, dt, 0.0), slope


@tk.func
def ssd_sub_chunk(Dt, SeqIdx, b, t0, j0, h, length, a_h, a_full, bias, dt_min, dt_max, Q: tk.constexpr,
                  S: tk.constexpr, HAS_BIAS: tk.constexpr, SOFTPLUS: tk.constexpr, CLAMP: tk.constexpr,
                  HAS_SEQ: tk.constexpr, ACC: tk.constexpr):
    """Rows j0 .. j0+S-1 of the chunk at t0: (dt, its slope, cum = the chunk's cumsum of dt A there, seq id).
    The cumsum is the sum of the chunk's dt A before j0 (a_full, the whole chunk's) plus the sub-chunk's own."""
    rows = t0 + j0 + tk.arange(S)
    valid = rows < length
    dt, slope = ssd_chunk_dt(Dt, b, t0 + j0, h, valid, bias, dt_min, dt_max, S, HAS_BIAS, SOFTPLUS, CLAMP, ACC)
    before = tk.sum(tk.where(tk.arange(Q) < j0, a_full, 0.0), 0)
    cum = before + tk.cumsum(dt * a_h, 0)
    seq = tk.zeros((S,), tk.int32)
    if HAS_SEQ:
        seq = tk.load(SeqIdx, (b, tk.minimum(rows, length - 1)), (1, S)).reshape((S,))
    return dt, slope, cum, seq


@tk.kernel(tunables=SSD_TUNABLES)
def ssd_scan_fwd_kernel(X, Dt, A, B, C, Dskip, Z, DtBias, Init, SeqIdx, Y, FinalStates, ChunkStates,
                        heads_per_group, dt_min, dt_max,
                        Q: tk.constexpr, S: tk.constexpr, BP: tk.constexpr, BN: tk.constexpr, HAS_D: tk.constexpr,
                        D_PER_P: tk.constexpr, HAS_Z: tk.constexpr, HAS_BIAS: tk.constexpr,
                        SOFTPLUS: tk.constexpr, CLAMP: tk.constexpr, HAS_INIT: tk.constexpr,
                        HAS_SEQ: tk.constexpr, SAVE_STATES: tk.constexpr, DOT: tk.constexpr, ACC: tk.constexpr):
    """Mamba-2 SSD for head h, head dims p0 .. p0+BP-1 of batch row b, in chunks of Q steps (the caller's
    chunk_size), following the SSD paper's chunked algorithm. Per chunk: the intra-chunk output
    (C B^T ∘ L) (dt x) with the decay mask L = exp(segsum(dt A)); the output from the state carried in,
    exp(cumsum) ∘ (C state^T); then the state carried out, exp(total) state + x^T (dt exp(total - cumsum) B).

    The chunk is walked in sub-chunks of S rows (a runtime loop), and each row block's intra-chunk term in
    (S, S) blocks of columns up to the diagonal (a runtime loop), so no tile is Q x Q. Matmul operands are in
    DOT (the inputs' fp16/bf16, as mamba_ssm's kernels; fp32/fp64 stay exact) with ACC accumulation.
    With seq_idx, L and both state terms are masked to steps of one sequence, so the state resets where
    seq_idx changes. With SAVE_STATES (the backward's recompute), ChunkStates (Bt, H, cdiv(L, Q), P, N) gets
    the state entering each chunk and Y the output before the z gate (what the backward starts from)."""
    batch, length, heads, hdim = X.shape
    b = tk.program_id(0)
    h = tk.program_id(1)
    p0 = tk.program_id(2) * BP
    g = h // heads_per_group
    a_h = tk.load(A, (h,)).to(ACC)
    bias = 0.0
    if HAS_BIAS:
        bias = tk.load(DtBias, (h,)).to(ACC)
    if HAS_INIT:
        state = tk.load(Init, (b, h, p0, 0), (1, 1, BP, BN)).reshape((BP, BN)).to(ACC)
    else:
        state = tk.zeros((BP, BN), ACC)
    step = tk.arange(Q)
    sub = tk.arange(S)
    is_last = step == Q - 1
    prev_seq = 0
    if HAS_SEQ:
        prev_seq = tk.load(SeqIdx, (b, 0))
    for t0 in tk.range(0, length, Q):
        if SAVE_STATES:
            tk.store(ChunkStates, (b, h, t0 // Q, p0, 0), state.reshape((1, 1, 1, BP, BN)))
        dt_full, slope_full = ssd_chunk_dt(Dt, b, t0, h, t0 + step < length, bias, dt_min, dt_max, Q, HAS_BIAS, SOFTPLUS,
                                  CLAMP, ACC)
        a_full = dt_full * a_h
        total = tk.sum(a_full, 0)
        carry_state = tk.exp(total)
        last_seq = prev_seq
        if HAS_SEQ:
            seq_full = tk.load(SeqIdx, (b, tk.minimum(t0 + step, length - 1)), (1, Q)).reshape((Q,))
            last_seq = tk.sum(tk.where(is_last, seq_full, 0), 0)
            carry_state = carry_state * tk.sum(tk.where(is_last & (seq_full == prev_seq), 1.0, 0.0), 0)
        state_in = state.to(DOT)
        state = carry_state * state
        for i0 in tk.range(0, Q, S):
            dt_i, slope_i, cum_i, seq_i = ssd_sub_chunk(Dt, SeqIdx, b, t0, i0, h, length, a_h, a_full, bias, dt_min,
                                                  dt_max, Q, S, HAS_BIAS, SOFTPLUS, CLAMP, HAS_SEQ, ACC)
            c_i = tk.load(C, (b, t0 + i0, g, 0), (1, S, 1, BN)).reshape((S, BN)).to(DOT)
            x_i = tk.load(X, (b, t0 + i0, h, p0), (1, S, 1, BP)).reshape((S, BP)).to(ACC)
            enter = tk.exp(cum_i)
            decay_out = tk.exp(total - cum_i)
            if HAS_SEQ:
                enter = tk.where(seq_i == prev_seq, enter, 0.0)
                decay_out = tk.where(seq_i == last_seq, decay_out, 0.0)
            y = enter[:, None] * tk.dot(c_i, state_in.T)
            for j0 in tk.range(0, i0 + S, S):
                dt_j, slope_j, cum_j, seq_j = ssd_sub_chunk(Dt, SeqIdx, b, t0, j0, h, length, a_h, a_full, bias, dt_min,
                                                      dt_max, Q, S, HAS_BIAS, SOFTPLUS, CLAMP, HAS_SEQ, ACC)
                b_j = tk.load(B, (b, t0 + j0, g, 0), (1, S, 1, BN)).reshape((S, BN)).to(DOT)
                x_j = tk.load(X, (b, t0 + j0, h, p0), (1, S, 1, BP)).reshape((S, BP)).to(DOT)
                keep = (i0 + sub)[:, None] >= (j0 + sub)[None, :]
                if HAS_SEQ:
                    keep = keep & (seq_i[:, None] == seq_j[None, :])
                decay = tk.exp(tk.where(keep, cum_i[:, None] - cum_j[None, :], -float("inf")))
                weights = tk.dot(c_i, b_j.T) * decay * dt_j[None, :]
                y = tk.mma(weights.to(DOT), x_j, y)
            b_i = tk.load(B, (b, t0 + i0, g, 0), (1, S, 1, BN)).reshape((S, BN)).to(DOT)
            state = tk.mma((x_i * (dt_i * decay_out)[:, None]).T.to(DOT), b_i, state)
            if HAS_D:
                if D_PER_P:
                    y = y + x_i * tk.load(Dskip, (h, p0), (1, BP)).to(ACC)
                else:
                    y = y + x_i * tk.load(Dskip, (h,)).to(ACC)
            if HAS_Z:
                if not SAVE_STATES:
                    z = tk.load(Z, (b, t0 + i0, h, p0), (1, S, 1, BP)).reshape((S, BP)).to(ACC)
                    y = y * (z * tk.sigmoid(z))
            tk.store(Y, (b, t0 + i0, h, p0), y.reshape((1, S, 1, BP)))
        prev_seq = last_seq
    tk.store(FinalStates, (b, h, p0, 0), state.reshape((1, 1, BP, BN)))


SSD_BWD_TUNABLES = tk.Tunables(
    {"BP": [8, 16, 32, 64], "BQ": [16, 32, 64], "num_warps": [1, 2, 4, 8], "num_stages": [1, 2]},
    valid=_ssd_config_rule,
    default={"BP": 32, "BQ": 32, "num_warps": 4, "num_stages": 1},
)

# The SSD backward is five kernels, each holding at most one (BP, BN) state-sized tile, so none spills at
# Mamba-2-2.7B (one fused kernel held the state, its gradient in and out and both as matmul operands):
#   ssd_bwd_gate_kernel    dz, the gradient before the z gate, dD             (elementwise, per sub-chunk)
#   ssd_bwd_dstate_kernel  the state-gradient scan across chunks (reverse): the gradient of the state leaving
#                          every chunk, d(initial_states), and the terms of dC and d(cum) from the state in
#   ssd_bwd_dx_kernel      per column sub-chunk: dx, dB, the direct d(dt), its columns' d(cum)
#   ssd_bwd_dc_kernel      per row sub-chunk: the intra-chunk dC and its rows' d(cum)
#   ssd_bwd_dt_kernel      per (batch row, head): d(dt A) = the reverse cumsum of d(cum) in each chunk, then
#                          ddt, dA and d(dt_bias)
# d(cum) and the direct d(dt) are summed over head-dim blocks by atomic adds into (Bt, H, chunks * Q) buffers;
# d(total) (the cum of the chunk's last step) is added at the chunk's last slot, so the reverse cumsum gives
# it to every step of the chunk.


@tk.func
def ssd_gated_grad(DY, Z, YPre, b, r0, h, p0, S: tk.constexpr, BP: tk.constexpr, HAS_Z: tk.constexpr,
                   ACC: tk.constexpr):
    """(dL/dy before the z gate, dL/dz) for rows r0 .. r0+S-1: y = y_pre silu(z)."""
    dout = tk.load(DY, (b, r0, h, p0), (1, S, 1, BP)).reshape((S, BP)).to(ACC)
    dy = dout
    dz = tk.zeros((S, BP), ACC)
    if HAS_Z:
        z = tk.load(Z, (b, r0, h, p0), (1, S, 1, BP)).reshape((S, BP)).to(ACC)
        y_pre = tk.load(YPre, (b, r0, h, p0), (1, S, 1, BP)).reshape((S, BP)).to(ACC)
        gate = tk.sigmoid(z)
        dz = dout * y_pre * gate * (1.0 + z * (1.0 - gate))
        dy = dout * z * gate
    return dy, dz


@tk.func
def ssd_sub_chunk_program(length, Q: tk.constexpr, S: tk.constexpr, BP: tk.constexpr):
    """What a backward sub-chunk program covers, from its ids (program 0: batch row x chunk x sub-chunk, 1:
    head, 2: head-dim block): (batch row, chunk, sub-chunk start in the chunk, chunk start, head, head dim)."""
    chunks = tk.cdiv(length, Q)
    per_chunk = Q // S
    chunk = (tk.program_id(0) // per_chunk) % chunks
    return (tk.program_id(0) // (chunks * per_chunk), chunk, (tk.program_id(0) % per_chunk) * S, chunk * Q,
            tk.program_id(1), tk.program_id(2) * BP)


@tk.func
def ssd_chunk_seq(SeqIdx, b, t0, length, Q: tk.constexpr, HAS_SEQ: tk.constexpr):
    """(seq id of the step before the chunk, seq id of its last step, 1.0 if the state passes through the
    chunk, else 0.0); (0, 0, 1.0) without seq_idx."""
    prev_seq = 0
    last_seq = 0
    passes = 1.0
    if HAS_SEQ:
        step = tk.arange(Q)
        prev_seq = tk.load(SeqIdx, (b, tk.maximum(t0 - 1, 0)))
        seq_full = tk.load(SeqIdx, (b, tk.minimum(t0 + step, length - 1)), (1, Q)).reshape((Q,))
        last_seq = tk.sum(tk.where(step == Q - 1, seq_full, 0), 0)
        passes = tk.sum(tk.where((step == Q - 1) & (seq_full == prev_seq), 1.0, 0.0), 0)
    return prev_seq, last_seq, passes


@tk.kernel(tunables=SSD_BWD_TUNABLES)
def ssd_bwd_gate_kernel(X, Z, YPre, DY, Dskip, DYGated, DZ, DD, chunks,
                        Q: tk.constexpr, S: tk.constexpr, BP: tk.constexpr, HAS_D: tk.constexpr,
                        D_PER_P: tk.constexpr, HAS_Z: tk.constexpr, ACC: tk.constexpr):
    """Rows of one chunk (program 0: batch row x chunk), head h, head dims p0 ..: dz, the gradient before the
    z gate (DYGated, what the other kernels read) and dD (atomic)."""
    batch, length, heads, hdim = X.shape
    b = tk.program_id(0) // chunks
    t0 = (tk.program_id(0) % chunks) * Q
    h = tk.program_id(1)
    p0 = tk.program_id(2) * BP
    d_skip = tk.zeros((1, BP), ACC)
    for r in tk.range(0, Q, S):
        dy, dz = ssd_gated_grad(DY, Z, YPre, b, t0 + r, h, p0, S, BP, HAS_Z, ACC)
        if HAS_Z:
            tk.store(DZ, (b, t0 + r, h, p0), dz.reshape((1, S, 1, BP)))
            tk.store(DYGated, (b, t0 + r, h, p0), dy.reshape((1, S, 1, BP)))
        if HAS_D:
            x = tk.load(X, (b, t0 + r, h, p0), (1, S, 1, BP)).reshape((S, BP)).to(ACC)
            d_skip = d_skip + tk.sum(dy * x, axis=0)[None, :]
    if HAS_D:
        if D_PER_P:
            tk.atomic_add(DD, (h, p0), d_skip)
        else:
            tk.atomic_add(DD, (h,), tk.sum(d_skip, axis=1))


@tk.kernel(tunables=SSD_BWD_TUNABLES)
def ssd_bwd_dstate_kernel(Dt, A, C, DtBias, SeqIdx, DYGated, ChunkStates, DFinal, DStates, DCum, DInit,
                          heads_per_group, dt_min, dt_max,
                          Q: tk.constexpr, S: tk.constexpr, BP: tk.constexpr, BN: tk.constexpr,
                          HAS_BIAS: tk.constexpr, SOFTPLUS: tk.constexpr, CLAMP: tk.constexpr,
                          HAS_SEQ: tk.constexpr, DOT: tk.constexpr, ACC: tk.constexpr):
    """The state-gradient scan for head h, head dims p0 .. of batch row b, chunks in reverse. dS (the
    gradient of the state leaving the chunk, DFinal for the last) is saved per chunk (DStates), then
    dS_in = exp(total) dS + (e ∘ dy)^T C with e = exp(cum); with the state entering the chunk (ChunkStates),
    d(total) = exp(total) <dS, S_in> (atomic, at the chunk's last d(cum) slot)."""
    length = DYGated.shape[1]
    b = tk.program_id(0)
    h = tk.program_id(1)
    p0 = tk.program_id(2) * BP
    g = h // heads_per_group
    a_h = tk.load(A, (h,)).to(ACC)
    bias = 0.0
    if HAS_BIAS:
        bias = tk.load(DtBias, (h,)).to(ACC)
    d_state = tk.load(DFinal, (b, h, p0, 0), (1, 1, BP, BN)).reshape((BP, BN)).to(ACC)
    step = tk.arange(Q)
    chunks = tk.cdiv(length, Q)
    for i in tk.range(0, chunks):
        chunk = chunks - 1 - i
        t0 = chunk * Q
        tk.store(DStates, (b, h, chunk, p0, 0), d_state.reshape((1, 1, 1, BP, BN)))
        state = tk.load(ChunkStates, (b, h, chunk, p0, 0), (1, 1, 1, BP, BN)).reshape((BP, BN)).to(ACC)
        dt_full, slope_full = ssd_chunk_dt(Dt, b, t0, h, t0 + step < length, bias, dt_min, dt_max, Q, HAS_BIAS,
                                           SOFTPLUS, CLAMP, ACC)
        a_full = dt_full * a_h
        prev_seq, last_seq, passes = ssd_chunk_seq(SeqIdx, b, t0, length, Q, HAS_SEQ)
        carry_state = tk.exp(tk.sum(a_full, 0)) * passes
        d_total = carry_state * tk.sum(tk.sum(d_state * state, axis=1)[None, :], axis=1)
        tk.atomic_add(DCum, (b, h, t0 + Q - 1), d_total.reshape((1, 1, 1)))
        d_state = carry_state * d_state
        for t in tk.range(0, Q, S):
            dt_t, slope_t, cum_t, seq_t = ssd_sub_chunk(Dt, SeqIdx, b, t0, t, h, length, a_h, a_full, bias, dt_min,
                                                        dt_max, Q, S, HAS_BIAS, SOFTPLUS, CLAMP, HAS_SEQ, ACC)
            enter = tk.exp(cum_t)
            if HAS_SEQ:
                enter = tk.where(seq_t == prev_seq, enter, 0.0)
            dy_t = tk.load(DYGated, (b, t0 + t, h, p0), (1, S, 1, BP)).reshape((S, BP)).to(ACC)
            c_t = tk.load(C, (b, t0 + t, g, 0), (1, S, 1, BN)).reshape((S, BN)).to(DOT)
            d_state = tk.mma((dy_t * enter[:, None]).to(DOT).T, c_t, d_state)
    tk.store(DInit, (b, h, p0, 0), d_state.reshape((1, 1, BP, BN)))


@tk.kernel(tunables=SSD_BWD_TUNABLES)
def ssd_bwd_dx_kernel(X, Dt, A, B, C, Dskip, DtBias, SeqIdx, DYGated, DStates, DX, DB, DCum, DDtDirect,
                      heads_per_group, dt_min, dt_max,
                      Q: tk.constexpr, S: tk.constexpr, BP: tk.constexpr, BN: tk.constexpr, HAS_D: tk.constexpr,
                      D_PER_P: tk.constexpr, HAS_BIAS: tk.constexpr, SOFTPLUS: tk.constexpr,
                      CLAMP: tk.constexpr, HAS_SEQ: tk.constexpr, DOT: tk.constexpr, ACC: tk.constexpr):
    """Column sub-chunk t (program 0: batch row x chunk x sub-chunk) of head h, head dims p0 ..: with
    W = (C B^T) ∘ L ∘ dt_j and w = dt exp(total - cum) (the state-out weights),
    dx_t = sum_{i >= t} W_it^T dy_i + w ∘ (B_t dS^T) + D dy_t,
    dB_t = sum_i (dW_it ∘ L ∘ dt)^T C_i + w ∘ (x_t dS),
    the direct d(dt)_t and the columns' d(cum) (atomic, summed over head-dim blocks), d(total) at the chunk's end."""
    batch, length, heads, hdim = X.shape
    b, chunk, t, t0, h, p0 = ssd_sub_chunk_program(length, Q, S, BP)
    g = h // heads_per_group
    a_h = tk.load(A, (h,)).to(ACC)
    bias = 0.0
    if HAS_BIAS:
        bias = tk.load(DtBias, (h,)).to(ACC)
    sub = tk.arange(S)
    dt_full, slope_full = ssd_chunk_dt(Dt, b, t0, h, t0 + tk.arange(Q) < length, bias, dt_min, dt_max, Q,
                                       HAS_BIAS, SOFTPLUS, CLAMP, ACC)
    a_full = dt_full * a_h
    total = tk.sum(a_full, 0)
    prev_seq, last_seq, passes = ssd_chunk_seq(SeqIdx, b, t0, length, Q, HAS_SEQ)
    dt_t, slope_t, cum_t, seq_t = ssd_sub_chunk(Dt, SeqIdx, b, t0, t, h, length, a_h, a_full, bias, dt_min,
                                                dt_max, Q, S, HAS_BIAS, SOFTPLUS, CLAMP, HAS_SEQ, ACC)
    x_t = tk.load(X, (b, t0 + t, h, p0), (1, S, 1, BP)).reshape((S, BP)).to(ACC)
    b_t = tk.load(B, (b, t0 + t, g, 0), (1, S, 1, BN)).reshape((S, BN)).to(DOT)
    dy_t = tk.load(DYGated, (b, t0 + t, h, p0), (1, S, 1, BP)).reshape((S, BP)).to(ACC)
    skip = tk.zeros((BP,), ACC)
    if HAS_D:
        if D_PER_P:
            skip = tk.load(Dskip, (h, p0), (1, BP)).reshape((BP,)).to(ACC)
        else:
            skip = skip + tk.load(Dskip, (h,)).to(ACC)
    decay_out = tk.exp(total - cum_t)
    if HAS_SEQ:
        decay_out = tk.where(seq_t == last_seq, decay_out, 0.0)
    d_state_dot = tk.load(DStates, (b, h, chunk, p0, 0), (1, 1, 1, BP, BN)).reshape((BP, BN)).to(DOT)
    w = dt_t * decay_out
    x_dot = x_t.to(DOT)
    b_dstate = tk.dot(b_t, d_state_dot.T)
    dx = dy_t * skip[None, :] + w[:, None] * b_dstate
    d_b = w[:, None] * tk.dot(x_dot, d_state_dot)
    d_w = tk.sum(x_t * b_dstate, axis=1)
    d_dt = d_w * decay_out
    d_cum = -(d_w * w)
    tk.atomic_add(DCum, (b, h, t0 + Q - 1), tk.sum((d_w * w)[None, :], axis=1).reshape((1, 1, 1)))
    for i0 in tk.range(t, Q, S):
        dt_i, slope_i, cum_i, seq_i = ssd_sub_chunk(Dt, SeqIdx, b, t0, i0, h, length, a_h, a_full, bias,
                                                    dt_min, dt_max, Q, S, HAS_BIAS, SOFTPLUS, CLAMP, HAS_SEQ, ACC)
        c_i = tk.load(C, (b, t0 + i0, g, 0), (1, S, 1, BN)).reshape((S, BN)).to(DOT)
        dy_i = tk.load(DYGated, (b, t0 + i0, h, p0), (1, S, 1, BP)).reshape((S, BP)).to(DOT)
        keep = (i0 + sub)[:, None] >= (t + sub)[None, :]
        if HAS_SEQ:
            keep = keep & (seq_i[:, None] == seq_t[None, :])
        decay = tk.exp(tk.where(keep, cum_i[:, None] - cum_t[None, :], -float("inf")))
        masked_scores = tk.dot(c_i, b_t.T) * decay
        d_weights = tk.dot(dy_i, x_dot.T)
        dx = tk.mma((masked_scores * dt_t[None, :]).T.to(DOT), dy_i, dx)
        d_b = tk.mma((d_weights * decay * dt_t[None, :]).T.to(DOT), c_i, d_b)
        col = tk.sum(d_weights * masked_scores, axis=0)
        d_dt = d_dt + col
        d_cum = d_cum - col * dt_t
    tk.store(DX, (b, t0 + t, h, p0), dx.reshape((1, S, 1, BP)))
    tk.atomic_add(DB, (b, t0 + t, g, 0), d_b.reshape((1, S, 1, BN)))
    tk.atomic_add(DCum, (b, h, t0 + t), d_cum.reshape((1, 1, S)))
    tk.atomic_add(DDtDirect, (b, h, t0 + t), d_dt.reshape((1, 1, S)))


@tk.kernel(tunables=SSD_BWD_TUNABLES)
def ssd_bwd_dc_kernel(X, Dt, A, B, C, DtBias, SeqIdx, DYGated, ChunkStates, DC, DCum, heads_per_group, dt_min,
                      dt_max,
                      Q: tk.constexpr, S: tk.constexpr, BP: tk.constexpr, BN: tk.constexpr,
                      HAS_BIAS: tk.constexpr, SOFTPLUS: tk.constexpr, CLAMP: tk.constexpr,
                      HAS_SEQ: tk.constexpr, DOT: tk.constexpr, ACC: tk.constexpr):
    """Row sub-chunk t (program 0: batch row x chunk x sub-chunk) of head h, head dims p0 ..:
    dC_t = (e ∘ dy_t) S_in + sum_{j <= t} (dW_tj ∘ L ∘ dt_j) B_j with dW = dy x^T and e = exp(cum), and its rows'
    d(cum) e ∘ (dy · C S_in^T) + sum_j (dW ∘ L ∘ dt)_tj (C_t · B_j) = rowsum(C_t ∘ dC_t), so C B^T is never
    formed (both atomic)."""
    batch, length, heads, hdim = X.shape
    b, chunk, t, t0, h, p0 = ssd_sub_chunk_program(length, Q, S, BP)
    g = h // heads_per_group
    a_h = tk.load(A, (h,)).to(ACC)
    bias = 0.0
    if HAS_BIAS:
        bias = tk.load(DtBias, (h,)).to(ACC)
    sub = tk.arange(S)
    dt_full, slope_full = ssd_chunk_dt(Dt, b, t0, h, t0 + tk.arange(Q) < length, bias, dt_min, dt_max, Q,
                                       HAS_BIAS, SOFTPLUS, CLAMP, ACC)
    a_full = dt_full * a_h
    dt_t, slope_t, cum_t, seq_t = ssd_sub_chunk(Dt, SeqIdx, b, t0, t, h, length, a_h, a_full, bias, dt_min,
                                                dt_max, Q, S, HAS_BIAS, SOFTPLUS, CLAMP, HAS_SEQ, ACC)
    dy_t = tk.load(DYGated, (b, t0 + t, h, p0), (1, S, 1, BP)).reshape((S, BP)).to(ACC)
    enter = tk.exp(cum_t)
    if HAS_SEQ:
        prev_seq, last_seq, passes = ssd_chunk_seq(SeqIdx, b, t0, length, Q, HAS_SEQ)
        enter = tk.where(seq_t == prev_seq, enter, 0.0)
    state_dot = tk.load(ChunkStates, (b, h, chunk, p0, 0), (1, 1, 1, BP, BN)).reshape((BP, BN)).to(DOT)
    d_c = tk.dot((dy_t * enter[:, None]).to(DOT), state_dot)  # from the state entering the chunk
    dy_dot = dy_t.to(DOT)
    for j0 in tk.range(0, t + S, S):
        dt_j, slope_j, cum_j, seq_j = ssd_sub_chunk(Dt, SeqIdx, b, t0, j0, h, length, a_h, a_full, bias,
                                                    dt_min, dt_max, Q, S, HAS_BIAS, SOFTPLUS, CLAMP, HAS_SEQ, ACC)
        b_j = tk.load(B, (b, t0 + j0, g, 0), (1, S, 1, BN)).reshape((S, BN)).to(DOT)
        x_j = tk.load(X, (b, t0 + j0, h, p0), (1, S, 1, BP)).reshape((S, BP)).to(DOT)
        keep = (t + sub)[:, None] >= (j0 + sub)[None, :]
        if HAS_SEQ:
            keep = keep & (seq_t[:, None] == seq_j[None, :])
        decay = tk.exp(tk.where(keep, cum_t[:, None] - cum_j[None, :], -float("inf")))
        d_scores = tk.dot(dy_dot, x_j.T) * decay * dt_j[None, :]
        d_c = tk.mma(d_scores.to(DOT), b_j, d_c)
    tk.atomic_add(DC, (b, t0 + t, g, 0), d_c.reshape((1, S, 1, BN)))
    c_t = tk.load(C, (b, t0 + t, g, 0), (1, S, 1, BN)).reshape((S, BN)).to(ACC)
    tk.atomic_add(DCum, (b, h, t0 + t), tk.sum(c_t * d_c, axis=1).reshape((1, 1, S)))
@tk.kernel
def ssd_bwd_dt_kernel(Dt, A, DtBias, DCum, DDtDirect, DDt, DA, DDtBias, dt_min, dt_max,
                      Q: tk.constexpr, HAS_BIAS: tk.constexpr, SOFTPLUS: tk.constexpr, CLAMP: tk.constexpr,
                      ACC: tk.constexpr):
    """Batch row b, head h, every chunk: d(dt A)_j = sum_{k >= j in the chunk} d(cum)_k (d(total) sits at the
    chunk's last slot), then ddt = (direct + d(dt A) A) times the slope of softplus / clamp, dA and d(dt_bias)
    (atomic over batch rows)."""
    batch, length, heads = Dt.shape
    b = tk.program_id(0)
    h = tk.program_id(1)
    a_h = tk.load(A, (h,)).to(ACC)
    bias = 0.0
    if HAS_BIAS:
        bias = tk.load(DtBias, (h,)).to(ACC)
    step = tk.arange(Q)
    d_a = tk.zeros((1, Q), ACC)
    d_bias = tk.zeros((1, Q), ACC)
    for t0 in tk.range(0, length, Q):
        dt_full, slope_full = ssd_chunk_dt(Dt, b, t0, h, t0 + step < length, bias, dt_min, dt_max, Q, HAS_BIAS,
                                           SOFTPLUS, CLAMP, ACC)
        d_cum = tk.load(DCum, (b, h, t0), (1, 1, Q)).reshape((Q,)).to(ACC)
        direct = tk.load(DDtDirect, (b, h, t0), (1, 1, Q)).reshape((Q,)).to(ACC)
        d_step = tk.cumsum(d_cum, 0, reverse=True)
        d_dt = (direct + d_step * a_h) * slope_full
        tk.store(DDt, (b, t0, h), d_dt.reshape((1, Q, 1)))
        d_a = d_a + (d_step * dt_full)[None, :]
        d_bias = d_bias + d_dt[None, :]
    tk.atomic_add(DA, (h,), tk.sum(d_a, axis=1))
    if HAS_BIAS:
        tk.atomic_add(DDtBias, (h,), tk.sum(d_bias, axis=1))


SSD_STATE_UPDATE_TUNABLES = tk.Tunables(
    {"BP": [1, 2, 4, 8, 16, 32, 64], "num_warps": [1, 2, 4, 8]},
    valid=lambda c: c["BP"] * c.get("BN", 128) // (32 * c["num_warps"]) <= MAX_SCAN_VALUES_PER_THREAD
    or "the (BP, BN) state block is more than 128 values per thread",
    default={"BP": 16, "num_warps": 4},
)


@tk.kernel(tunables=SSD_STATE_UPDATE_TUNABLES)
def ssd_state_update_kernel(State, X, Dt, A, B, C, Dskip, Z, DtBias, SlotIndices, Out, heads_per_group,
                            BP: tk.constexpr, BN: tk.constexpr, HAS_D: tk.constexpr, D_PER_P: tk.constexpr,
                            HAS_Z: tk.constexpr, HAS_BIAS: tk.constexpr, SOFTPLUS: tk.constexpr,
                            HAS_INDICES: tk.constexpr, ACC: tk.constexpr):
    """One Mamba-2 decode step for head h, head dims p0 .. p0+BP-1 of batch row b: State[slot, h] (P, N) is
    read, advanced by s = exp(dt A) s + dt x B^T, written back in place, and Out = s C + D x (gated by
    silu(z)). A negative slot (a padding row of a continuous batch) is masked off: its state row is not
    touched and its output is not written."""
    batch, heads, hdim = X.shape
    b = tk.program_id(0)
    h = tk.program_id(1)
    p0 = tk.program_id(2) * BP
    g = h // heads_per_group
    slot = b
    if HAS_INDICES:
        slot = tk.load(SlotIndices, (b,))
    # masked rather than branched around (an `if` on a runtime scalar around stores, see selective_state_update)
    live = (tk.zeros((BP,), tk.int32) + slot) >= 0
    row = tk.maximum(slot, 0)
    state = tk.load(State, (row, h, p0, 0), (1, 1, BP, BN), mask=live[None, None, :, None]).reshape((BP, BN)).to(ACC)
    x = tk.load(X, (b, h, p0), (1, 1, BP)).reshape((BP,)).to(ACC)
    dt = tk.load(Dt, (b, h)).to(ACC)
    if HAS_BIAS:
        dt = dt + tk.load(DtBias, (h,)).to(ACC)
    if SOFTPLUS:
        dt = softplus(tk.zeros((1,), ACC) + dt)
    else:
        dt = tk.zeros((1,), ACC) + dt
    a_h = tk.load(A, (h,)).to(ACC)
    bc = tk.load(B, (b, g, 0), (1, 1, BN)).reshape((1, BN)).to(ACC)
    cc = tk.load(C, (b, g, 0), (1, 1, BN)).reshape((1, BN)).to(ACC)
    state = tk.exp(dt * a_h)[:, None] * state + (dt * x)[:, None] * bc
    tk.store(State, (row, h, p0, 0), state.reshape((1, 1, BP, BN)), mask=live[None, None, :, None])
    y = tk.sum(state * cc, axis=1)
    if HAS_D:
        if D_PER_P:
            y = y + x * tk.load(Dskip, (h, p0), (1, BP)).reshape((BP,)).to(ACC)
        else:
            y = y + x * tk.load(Dskip, (h,)).to(ACC)
    if HAS_Z:
        z = tk.load(Z, (b, h, p0), (1, 1, BP)).reshape((BP,)).to(ACC)
        y = y * (z * tk.sigmoid(z))
    tk.store(Out, (b, h, p0), y.reshape((1, 1, BP)), mask=live[None, None, :])
