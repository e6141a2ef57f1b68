"""MoE's DSL kernels: routing (forward and backward) and the stable block alignment."""
import tilekit as tk


def _route_config_rule(config):
    """Valid if one BT x 256 score block over the warps stays within a register budget per thread."""
    per_thread = config["BT"] * 256 // (32 * config["num_warps"])
    if per_thread > 128:
        return f"a {config['BT']}x256 block over {config['num_warps']} warps is {per_thread} values per thread"
    return True


ROUTE_TUNABLES = tk.Tunables(
    {"BT": [1, 2, 4, 8, 16, 32], "num_warps": [1, 2, 4, 8]},
    valid=_route_config_rule,
    default={"BT": 4, "num_warps": 4},
)


@tk.kernel(tunables=ROUTE_TUNABLES)
def moe_route_kernel(Logits, Bias, Weights, Ids, route_scale, BT: tk.constexpr, GP: tk.constexpr,
                     SP: tk.constexpr, KP: tk.constexpr, TOP_K: tk.constexpr, SIGMOID: tk.constexpr,
                     HAS_BIAS: tk.constexpr, NUM_GROUPS: tk.constexpr, GROUP_SIZE: tk.constexpr,
                     TOPK_GROUPS: tk.constexpr, RENORM: tk.constexpr):
    """Per token: p = softmax|sigmoid(logits), sel = p + bias, optional grouped pre-selection, then the
    TOP_K experts by descending sel (equal sel to the lower id). Weights are p there, renormalised and
    scaled. BT tokens per program. The experts sit in a grouped layout of GP x SP columns (group g's
    expert g * GROUP_SIZE + s at column g * SP + s; GP, SP the powers of two covering NUM_GROUPS and
    GROUP_SIZE; one group of SP >= E without groups), so a group's top-2 is a reduction over the last axis
    of a (BT, GP, SP) view. The column order is the expert order, so the lowest column is the lowest id.
    The group and top-k selections are runtime loops: the generated code does not grow with TOP_K or the
    number of groups."""
    T, E = Logits.shape
    W = GP * SP
    row = tk.program_id(0) * BT
    col = tk.arange(W)
    expert = col // SP * GROUP_SIZE + col % SP
    valid = ((col % SP) < GROUP_SIZE) & ((col // SP) < NUM_GROUPS)
    if GROUP_SIZE == SP or NUM_GROUPS == 1:
        # no padding inside a group: the layout is the plain expert order, a block load
        x = tk.load(Logits, (row, 0), (BT, W))
        if HAS_BIAS:
            bias = tk.load(Bias, (0, 0), (1, W))
    else:
        safe_expert = tk.where(valid, expert, 0)
        x = tk.load(Logits, (row, safe_expert), (BT, W), mask=valid[None, :])
        if HAS_BIAS:
            bias = tk.load(Bias, (0, safe_expert), (1, W), mask=valid[None, :])
    x = tk.where(valid[None, :], x.to(tk.float32), -float("inf"))
    if SIGMOID:
        p = tk.where(valid[None, :], tk.sigmoid(x), 0.0)
    else:
        e = tk.exp(x - tk.max(x, axis=1)[:, None])
        p = e / tk.sum(e, axis=1)[:, None]
    if HAS_BIAS:
        remaining = tk.where(valid[None, :], p + bias.to(tk.float32), -float("inf"))
    else:
        remaining = tk.where(valid[None, :], p, -float("inf"))
    if NUM_GROUPS > 1:
        # a group's score: its two largest sel (the second is the largest of the rest)
        grouped = remaining.reshape(BT, GP, SP)
        member = tk.arange(SP)[None, None, :]
        first = tk.max(grouped, axis=2)
        first_at = tk.min(tk.where(grouped == first[:, :, None], member, SP), axis=2)
        second = tk.max(tk.where(member == first_at[:, :, None], -float("inf"), grouped), axis=2)
        group_score = first + second
        group = tk.arange(GP)[None, :]
        kept = tk.zeros((BT, GP), tk.int32)
        for _ in tk.range(0, TOPK_GROUPS):
            best = tk.max(group_score, axis=1)
            best_group = tk.min(tk.where(group_score == best[:, None], group, GP), axis=1)
            picked = group == best_group[:, None]
            kept = tk.where(picked, 1, kept)
            group_score = tk.where(picked, -float("inf"), group_score)
        kept_cols = tk.broadcast_to(kept[:, :, None], (BT, GP, SP)).reshape(BT, W)
        remaining = tk.where(kept_cols > 0, remaining, -float("inf"))
    kcol = tk.arange(KP)[None, :]
    weights = tk.zeros((BT, KP), tk.float32)
    ids = tk.zeros((BT, KP), tk.int32)
    for k in tk.range(0, TOP_K):
        best = tk.max(remaining, axis=1)
        best_col = tk.min(tk.where(remaining == best[:, None], col[None, :], W), axis=1)
        chosen = col[None, :] == best_col[:, None]
        in_k = kcol == k
        weights = tk.where(in_k, tk.sum(tk.where(chosen, p, 0.0), axis=1)[:, None], weights)
        ids = tk.where(in_k, (best_col // SP * GROUP_SIZE + best_col % SP)[:, None], ids)
        remaining = tk.where(chosen, -float("inf"), remaining)
    if RENORM:
        weights = weights / tk.sum(weights, axis=1)[:, None]
    weights = weights * route_scale
    stored = (kcol < TOP_K) & ((row + tk.arange(BT))[:, None] < T)
    tk.store(Weights, (row, 0), weights, mask=stored)
    tk.store(Ids, (row, 0), ids, mask=stored)


@tk.kernel(tunables=ROUTE_TUNABLES)
def moe_route_backward_kernel(Logits, Ids, GradWeights, GradLogits, route_scale, BT: tk.constexpr,
                              EP: tk.constexpr, KP: tk.constexpr, TOP_K: tk.constexpr, SIGMOID: tk.constexpr,
                              RENORM: tk.constexpr):
    """d(logits) of moe_route: through the chosen p only (the bias and the selection take no gradient).
    One runtime loop over the TOP_K columns gathers p at each chosen expert and scatters d(weights) onto
    the expert columns; with S = sum of the chosen p, dp = s (g - <g, p_chosen> / S) / S at the chosen
    experts, which the chosen mask applies after the loop."""
    T, E = Logits.shape
    row = tk.program_id(0) * BT
    col = tk.arange(EP)[None, :]
    valid = col < E
    x = tk.where(valid, tk.load(Logits, (row, 0), (BT, EP)).to(tk.float32), -float("inf"))
    if SIGMOID:
        p = tk.where(valid, tk.sigmoid(x), 0.0)
    else:
        e = tk.exp(x - tk.max(x, axis=1)[:, None])
        p = e / tk.sum(e, axis=1)[:, None]
    kcol = tk.arange(KP)[None, :]
    in_top_k = kcol < TOP_K
    ids = tk.load(Ids, (row, 0), (BT, KP), other=-1, mask=in_top_k)
    grad_w = tk.load(GradWeights, (row, 0), (BT, KP), mask=in_top_k).to(tk.float32)
    chosen_p = tk.zeros((BT, KP), tk.float32)
    grad_at = tk.zeros((BT, EP), tk.float32)  # d(weights) of the chosen experts, at their columns
    chosen = tk.zeros((BT, EP), tk.float32)
    for k in tk.range(0, TOP_K):
        in_k = kcol == k
        hit = col == tk.sum(tk.where(in_k, ids, 0), axis=1)[:, None]
        chosen_p = tk.where(in_k, tk.sum(tk.where(hit, p, 0.0), axis=1)[:, None], chosen_p)
        grad_at = tk.where(hit, tk.sum(tk.where(in_k, grad_w, 0.0), axis=1)[:, None], grad_at)
        chosen = tk.where(hit, 1.0, chosen)
    if RENORM:
        total = tk.sum(chosen_p, axis=1)
        inner = tk.sum(grad_w * chosen_p, axis=1) / total
        grad_p = route_scale * (grad_at - inner[:, None] * chosen) / total[:, None]
    else:
        grad_p = route_scale * grad_at
    if SIGMOID:
        grad_x = grad_p * p * (1.0 - p)
    else:
        grad_x = p * (grad_p - tk.sum(grad_p * p, axis=1)[:, None])
    tk.store(GradLogits, (row, 0), grad_x.to(GradLogits.dtype))


ALIGN_TUNABLES = tk.Tunables(
    {"BS": [16, 32, 64, 128, 256], "num_warps": [1, 2, 4, 8]},
    default={"BS": 64, "num_warps": 4},
)


@tk.kernel(tunables=ALIGN_TUNABLES)
def moe_align_count_kernel(Ids, Counts, BS: tk.constexpr, EP: tk.constexpr):
    """Counts[b, e] = the number of slots of slot block b routed to expert e (no atomics)."""
    (n,) = Ids.shape
    block = tk.program_id(0)
    slot = block * BS + tk.arange(BS)
    ids = tk.load(Ids, (block * BS,), (BS,), other=-1).to(tk.int32)
    one_hot = tk.where((ids[:, None] == tk.arange(EP)[None, :]) & (slot[:, None] < n), 1, 0)
    tk.store(Counts, (block, 0), tk.sum(one_hot, axis=0)[None, :])


@tk.kernel(tunables=ALIGN_TUNABLES)
def moe_align_scan_kernel(Counts, Base, ExpertIds, NumPadded, num_experts, BS: tk.constexpr, EP: tk.constexpr,
                          BLOCK_M: tk.constexpr):
    """One program: the exclusive scan over (slot block, expert) in expert-major order, each expert's group
    padded to BLOCK_M. Base[b, e] is where slot block b's first slot of expert e goes. Also writes the
    expert of every BLOCK_M block (-1 past the padded end) and the padded total."""
    num_blocks, _ = Counts.shape
    (num_m_blocks,) = ExpertIds.shape
    col = tk.arange(EP)
    total = tk.zeros((EP,), tk.int32)
    for b in tk.range(0, num_blocks):
        total = total + tk.load(Counts, (b, 0), (1, EP))[0, :]
    padded = (total + (BLOCK_M - 1)) // BLOCK_M * BLOCK_M
    end = tk.cumsum(padded, 0)
    start = end - padded
    running = start
    for b in tk.range(0, num_blocks):
        tk.store(Base, (b, 0), running[None, :])
        running = running + tk.load(Counts, (b, 0), (1, EP))[0, :]
    num_padded = tk.sum(padded, axis=0)
    tk.store(NumPadded, (0,), tk.full((1,), 0, tk.int32) + num_padded)
    for m0 in tk.range(0, num_m_blocks, BS):
        pos = (m0 + tk.arange(BS)) * BLOCK_M
        owner = tk.sum(tk.where((end[None, :] <= pos[:, None]) & (col[None, :] < num_experts), 1, 0), axis=1)
        tk.store(ExpertIds, (m0,), tk.where(pos < num_padded, owner, -1))


@tk.kernel(tunables=ALIGN_TUNABLES)
def moe_align_scatter_kernel(Ids, Base, SortedIds, BS: tk.constexpr, EP: tk.constexpr):
    """Slot block b writes each slot at Base[b, e] plus its rank among block b's slots of expert e: a
    cumsum of the one-hot, so positions never come from atomic cursors."""
    (n,) = Ids.shape
    block = tk.program_id(0)
    slot = block * BS + tk.arange(BS)
    ids = tk.load(Ids, (block * BS,), (BS,), other=-1).to(tk.int32)
    one_hot = tk.where((ids[:, None] == tk.arange(EP)[None, :]) & (slot[:, None] < n), 1, 0)
    rank = tk.cumsum(one_hot, 0) - one_hot
    base = tk.load(Base, (block, 0), (1, EP))
    pos = tk.sum(one_hot * (base + rank), axis=1)
    tk.store(SortedIds, (pos,), slot, mask=slot < n)


def _gemm_config_rule(config):
    """Valid if the accumulators (two for gate_up) and the operand tiles fit a register budget per thread."""
    threads = 32 * config["num_warps"]
    per_thread = (2 * config["BM"] * config["BN"] + (config["BM"] + config["BN"]) * config["BK"]) // threads
    if per_thread > 256:
        return f"BM={config['BM']} BN={config['BN']} BK={config['BK']} is {per_thread} values per thread"
    return True


GEMM_TUNABLES = tk.Tunables(
    {"BM": [16, 32, 64, 128], "BN": [16, 32, 64, 128, 256], "BK": [16, 32, 64, 128], "num_warps": [1, 2, 4, 8],
     "num_stages": [1, 2, 3, 4]},
    valid=_gemm_config_rule,
    default={"BM": 64, "BN": 64, "BK": 32, "num_warps": 4, "num_stages": 2},
)


@tk.func
def _gelu_tanh(x):
    return 0.5 * x * (1.0 + tk.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


@tk.kernel(tunables=GEMM_TUNABLES)
def moe_gate_up_kernel(X, WGateUp, SortedIds, ExpertIds, NumPadded, Inter, top_k, BM: tk.constexpr,
                       BN: tk.constexpr, BK: tk.constexpr, GELU: tk.constexpr, STAGES: tk.constexpr,
                       ACC: tk.constexpr = tk.float32):
    """Inter[s] = act(W_gate[e] x[t]) * (W_up[e] x[t]) for the BM slots s of M-block program_id(0) (token
    t = s // top_k), whose expert e is read from ExpertIds, and BN of the F columns. Gate and up share one
    pass over H; sentinel slots are masked, and a block past num_padded loads nothing. Inter is in slot
    order (T*top_k rows, as vLLM's intermediate cache): its shape does not depend on BM, and padding takes
    no memory."""
    T, H = X.shape
    _, F2, _ = WGateUp.shape
    F = F2 // 2
    block = tk.program_id(0)
    n0 = tk.program_id(1) * BN
    num_padded = tk.load(NumPadded, (0,))
    if block * BM < num_padded:
        expert = tk.load(ExpertIds, (block,))
        slots = tk.load(SortedIds, (block * BM,), (BM,))
        real = slots < T * top_k
        tokens = tk.where(real, slots // top_k, 0)
        in_f = (n0 + tk.arange(BN))[None, :] < F
        gate = tk.zeros((BM, BN), ACC)
        up = tk.zeros((BM, BN), ACC)
        for k in tk.range(0, H, BK, stages=STAGES):
            x = tk.load(X, (tokens, k), (BM, BK), mask=real[:, None])
            # both masked at F (the gate's rows past it are the up projection's): one mask serves both loads,
            # and it implies the rows' bound, so no other row test is emitted
            w_gate = tk.load(WGateUp, (expert, n0, k), (1, BN, BK), mask=in_f[:, :, None])[0, :, :]
            w_up = tk.load(WGateUp, (expert, F + n0, k), (1, BN, BK), mask=in_f[:, :, None])[0, :, :]
            gate = tk.mma(x, w_gate.T, gate)
            up = tk.mma(x, w_up.T, up)
        if GELU:
            act = _gelu_tanh(gate)
        else:
            act = gate * tk.sigmoid(gate)
        safe_slots = tk.where(real, slots, 0)  # the sentinel is one past the end: never an address
        # columns past F hold act(0) * 0 = 0; Inter's own width bounds the store
        tk.store(Inter, (safe_slots, n0), (act * up).to(Inter.dtype), mask=real[:, None])


@tk.kernel(tunables=GEMM_TUNABLES)
def moe_down_kernel(Inter, WDown, SortedIds, ExpertIds, NumPadded, Weights, SlotOut, top_k, BM: tk.constexpr,
                    BN: tk.constexpr, BK: tk.constexpr, STAGES: tk.constexpr, ACC: tk.constexpr = tk.float32):
    """SlotOut[s] = weight[s] * W_down[e] Inter[s] for the slots s of one M-block: one fp32 row per routed
    slot, so the combine can sum a token's top_k rows in a fixed order (no atomics)."""
    _, H, F = WDown.shape
    (num_slots,) = Weights.shape
    block = tk.program_id(0)
    n0 = tk.program_id(1) * BN
    num_padded = tk.load(NumPadded, (0,))
    if block * BM < num_padded:
        expert = tk.load(ExpertIds, (block,))
        slots = tk.load(SortedIds, (block * BM,), (BM,))
        real = slots < num_slots
        safe_slots = tk.where(real, slots, 0)  # the sentinel is one past the end: never an address
        acc = tk.zeros((BM, BN), ACC)
        for k in tk.range(0, F, BK, stages=STAGES):
            h = tk.load(Inter, (safe_slots, k), (BM, BK), mask=real[:, None])
            w = tk.load(WDown, (expert, n0, k), (1, BN, BK))[0, :, :]
            acc = tk.mma(h, w.T, acc)
        weight = tk.load(Weights, (safe_slots,), (BM,), mask=real).to(ACC)
        tk.store(SlotOut, (safe_slots, n0), (acc * weight[:, None]).to(SlotOut.dtype), mask=real[:, None])


COMBINE_TUNABLES = tk.Tunables(
    {"BT": [1, 2, 4, 8, 16, 32], "BN": [32, 64, 128, 256, 512, 1024], "num_warps": [1, 2, 4, 8]},
    default={"BT": 4, "BN": 256, "num_warps": 4},
)


@tk.kernel(tunables=COMBINE_TUNABLES)
def moe_combine_kernel(SlotOut, Y, top_k, BT: tk.constexpr, BN: tk.constexpr, ACC: tk.constexpr = tk.float32):
    """Y[t] = sum_j SlotOut[t * top_k + j], j = 0 .. top_k-1 in that order: bitwise deterministic."""
    T, H = Y.shape
    t0 = tk.program_id(0) * BT
    n0 = tk.program_id(1) * BN
    rows = (t0 + tk.arange(BT)) * top_k
    acc = tk.zeros((BT, BN), ACC)
    for j in tk.range(0, top_k):
        acc = acc + tk.load(SlotOut, (rows + j, n0), (BT, BN), mask=(t0 + tk.arange(BT))[:, None] < T)
    tk.store(Y, (t0, n0), acc.to(Y.dtype))


# ---- fused_moe backward -----------------------------------------------------------------------------

@tk.func
def _silu_and_derivative(gate):
    s = tk.sigmoid(gate)
    return gate * s, s * (1.0 + gate * (1.0 - s))


@tk.func
def _gelu_tanh_and_derivative(gate):
    c = 0.7978845608028654
    th = tk.tanh(c * (gate + 0.044715 * gate * gate * gate))
    d_act = 0.5 * (1.0 + th) + 0.5 * gate * (1.0 - th * th) * c * (1.0 + 3.0 * 0.044715 * gate * gate)
    return 0.5 * gate * (1.0 + th), d_act


def _backward_gemm_rule(config):
    """Valid if the three accumulators (gate, up, d h) and the five operand tiles fit a register budget."""
    threads = 32 * config["num_warps"]
    bm, bn, bk = config["BM"], config["BN"], config["BK"]
    per_thread = (3 * bm * bn + 2 * bm * bk + 3 * bn * bk) // threads
    if per_thread > 256:
        return f"BM={bm} BN={bn} BK={bk} is {per_thread} values per thread"
    return True


# BM is the backward's alignment block: every backward kernel walks that one alignment
BACKWARD_GEMM_TUNABLES = tk.Tunables(
    {"BM": [16, 32, 64, 128], "BN": [16, 32, 64, 128], "BK": [16, 32, 64], "num_warps": [1, 2, 4, 8],
     "num_stages": [1, 2, 3]},
    valid=_backward_gemm_rule,
    default={"BM": 64, "BN": 64, "BK": 32, "num_warps": 4, "num_stages": 2},
)


@tk.kernel(tunables=BACKWARD_GEMM_TUNABLES)
def moe_gate_up_backward_kernel(X, WGateUp, WDown, GradY, SortedIds, ExpertIds, NumPadded, Weights, Inter,
                                GradGateUp, GradWeightParts, top_k, BM: tk.constexpr, BN: tk.constexpr,
                                BK: tk.constexpr, GELU: tk.constexpr, STAGES: tk.constexpr, ACC: tk.constexpr,
                                NEED_GRAD_GATE_UP: tk.constexpr = True, NEED_H: tk.constexpr = True,
                                NEED_WEIGHT_GRAD: tk.constexpr = True):
    """For the BM slots s of one M-block (expert e read from ExpertIds) and BN of the F columns, in
    one pass over H: the gate/up GEMM again (x[t] W_gate_up[e]^T) and the down GEMM's input gradient
    g = dy[t] W_down[e] (W_down not transposed: the forward's transposed operand). Then, in registers,
    h = act(gate) up (stored: dW_down reads it), the partial d(weight) <g, h> over these BN columns (one
    column of GradWeightParts per F block, summed later in a fixed order), and dh = weight g through the
    activation's derivative into GradGateUp[p] = [d gate, d up] (2F wide). The NEED_* switches drop what
    no requested gradient uses: d[gate, up] (for dx and dW_gate_up), h (for dW_down), the d(weights)
    partials; without the first and the last, the down GEMM's input gradient is not formed at all."""
    T, H = X.shape
    _, F2, _ = WGateUp.shape
    F = F2 // 2
    (num_slots,) = Weights.shape
    block = tk.program_id(0)
    f_block = tk.program_id(1)
    n0 = f_block * BN
    num_padded = tk.load(NumPadded, (0,))
    if block * BM < num_padded:
        expert = tk.load(ExpertIds, (block,))
        slots = tk.load(SortedIds, (block * BM,), (BM,))
        real = slots < num_slots
        tokens = tk.where(real, slots // top_k, 0)
        safe_slots = tk.where(real, slots, 0)  # the sentinel is one past the end: never an address
        in_f = (n0 + tk.arange(BN))[None, :] < F
        gate = tk.zeros((BM, BN), ACC)
        up = tk.zeros((BM, BN), ACC)
        grad_h = tk.zeros((BM, BN), ACC)
        need_grad_h = NEED_GRAD_GATE_UP or NEED_WEIGHT_GRAD
        for k in tk.range(0, H, BK, stages=STAGES):
            # every load before the first mma (this order keeps sm_90 at 189 registers, not 242)
            x = tk.load(X, (tokens, k), (BM, BK), mask=real[:, None])
            if need_grad_h:
                dy = tk.load(GradY, (tokens, k), (BM, BK), mask=real[:, None])
            w_gate = tk.load(WGateUp, (expert, n0, k), (1, BN, BK), mask=in_f[:, :, None])[0, :, :]
            w_up = tk.load(WGateUp, (expert, F + n0, k), (1, BN, BK))[0, :, :]
            if need_grad_h:
                w_down = tk.load(WDown, (expert, k, n0), (1, BK, BN))[0, :, :]
            gate = tk.mma(x, w_gate.T, gate)
            up = tk.mma(x, w_up.T, up)
            if need_grad_h:
                grad_h = tk.mma(dy, w_down, grad_h)
        if GELU:
            act, d_act = _gelu_tanh_and_derivative(gate)
        else:
            act, d_act = _silu_and_derivative(gate)
        h = act * up
        if NEED_GRAD_GATE_UP:
            weight = tk.load(Weights, (safe_slots,), (BM,), mask=real).to(ACC)
            dh = grad_h * weight[:, None]
        stored = real[:, None] & in_f
        if NEED_H:
            tk.store(Inter, (safe_slots, n0), h.to(Inter.dtype), mask=stored)
        if NEED_GRAD_GATE_UP:
            tk.store(GradGateUp, (safe_slots, n0), (dh * up * d_act).to(GradGateUp.dtype), mask=stored)
            tk.store(GradGateUp, (safe_slots, F + n0), (dh * act).to(GradGateUp.dtype), mask=stored)
        if NEED_WEIGHT_GRAD:
            part = tk.sum(tk.where(in_f, grad_h * h, 0.0), axis=1)
            tk.store(GradWeightParts, (safe_slots, f_block), part[:, None].to(GradWeightParts.dtype),
                     mask=real[:, None])


@tk.kernel
def moe_expert_starts_kernel(ExpertIds, NumPadded, Starts, BS: tk.constexpr, EP: tk.constexpr,
                             BLOCK_M: tk.constexpr):
    """Starts[e] = the first M-block of expert e (the number of used blocks of a lower expert), for e = 0 .. E;
    Starts[E] is the number of used blocks. One program, no atomics."""
    (num_m_blocks,) = ExpertIds.shape
    used_blocks = tk.load(NumPadded, (0,)) // BLOCK_M
    col = tk.arange(EP)
    before = tk.zeros((EP,), tk.int32)
    for m0 in tk.range(0, num_m_blocks, BS):
        blocks = m0 + tk.arange(BS)
        owner = tk.load(ExpertIds, (m0,), (BS,), other=-1)
        lower = (blocks[:, None] < used_blocks) & (owner[:, None] < col[None, :])
        before = before + tk.sum(tk.where(lower, 1, 0), axis=0)
    tk.store(Starts, (0,), before)


WEIGHT_GRAD_TUNABLES = tk.Tunables(
    {"BR": [16, 32, 64, 128], "BC": [16, 32, 64, 128], "num_warps": [1, 2, 4, 8], "num_stages": [1, 2, 3]},
    default={"BR": 64, "BC": 64, "num_warps": 4, "num_stages": 2},
)


@tk.kernel(tunables=WEIGHT_GRAD_TUNABLES)
def moe_weight_grad_kernel(A, B, SortedIds, Starts, Weights, Out, top_k, BM: tk.constexpr, BR: tk.constexpr,
                           BC: tk.constexpr, A_BY_TOKEN: tk.constexpr, SCALE_A: tk.constexpr,
                           STAGES: tk.constexpr, ACC: tk.constexpr):
    """Out[e] = sum over expert e's slots s of a[s]^T b[s]: the grouped GEMM with the M-blocks as its
    reduction. One program per (expert, BR rows, BC columns) walks its expert's blocks Starts[e] .. Starts[e+1];
    an expert with no tokens writes zeros. a and b are rows of A and B at the slot s, or at its token
    (A_BY_TOKEN: a = dy[t], then b = h[s]; else a = d[gate, up][s], b = x[t]); SCALE_A multiplies a by the
    slot's routing weight. dW_down = sum w dy^T h, dW_gate_up = sum d[gate, up]^T x."""
    _, R, C = Out.shape
    (num_slots,) = Weights.shape
    expert = tk.program_id(0)
    r0 = tk.program_id(1) * BR
    c0 = tk.program_id(2) * BC
    first = tk.load(Starts, (expert,))
    last = tk.load(Starts, (expert + 1,))
    acc = tk.zeros((BR, BC), ACC)
    for m_block in tk.range(first, last, stages=STAGES):
        slots = tk.load(SortedIds, (m_block * BM,), (BM,))
        real = slots < num_slots
        tokens = tk.where(real, slots // top_k, 0)
        safe_slots = tk.where(real, slots, 0)
        if A_BY_TOKEN:
            a = tk.load(A, (tokens, r0), (BM, BR), mask=real[:, None])
            b = tk.load(B, (safe_slots, c0), (BM, BC), mask=real[:, None])
        else:
            a = tk.load(A, (safe_slots, r0), (BM, BR), mask=real[:, None])
            b = tk.load(B, (tokens, c0), (BM, BC), mask=real[:, None])
        if SCALE_A:
            weight = tk.load(Weights, (safe_slots,), (BM,), mask=real).to(ACC)
            a = (a.to(ACC) * weight[:, None]).to(A.dtype)
        acc = tk.mma(a.T, b, acc)
    tk.store(Out, (expert, r0, c0), acc[None, :, :].to(Out.dtype))
