"""attention's DSL kernels: the FlashAttention-2 forward, and the backward (delta preprocess, dK/dV, dQ).

Scores are kept in base 2: ``s2 = log2(e) * s``, so the softmax uses ``exp2`` with the scale folded in.
Visibility (DESIGN.md): query i sees key j iff ``i + diag - left <= j <= i + diag + right`` with
``diag = Skv - Sq``; the wrapper passes an unbounded side as a sentinel larger than any distance, and a
causal call as ``right = min(right, 0)``. The loops run only over key (query) blocks that hold a visible
pair, so causal and windowed calls skip the fully masked blocks instead of masking them.
"""
import tilekit as tk

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


def _attention_config_rule(config):
    """Shared memory and registers: the Q, K and V tiles of one program, and its fp32 score tile."""
    bm, bn, bd, warps = config["BM"], config["BN"], config.get("BD", 128), config["num_warps"]
    elem = config.get("elem_bytes", 2)
    smem = (bm + 2 * bn) * bd * elem * max(1, config.get("num_stages", 1))
    if smem > 200 * 1024:
        return f"tiles take {smem} bytes of shared memory, more than 200 KiB"
    per_thread = (bm * bn + bm * bd) // (32 * warps)
    if per_thread > 256:
        return f"a {bm}x{bn} score tile and {bm}x{bd} accumulator are {per_thread} fp32 values per thread"
    return True


ATTENTION_TUNABLES = tk.Tunables(
    {"BM": [16, 32, 64, 128], "BN": [16, 32, 64, 128], "num_warps": [2, 4, 8], "num_stages": [1, 2, 3]},
    valid=_attention_config_rule,
    default={"BM": 64, "BN": 64, "num_warps": 4, "num_stages": 2},
)


@tk.func
def _scores2(qk, scale, softcap, SOFTCAP: tk.constexpr):
    """Base-2 scores from raw q.k, and d(s)/d(qk) (the softcap's tanh slope times the scale)."""
    if SOFTCAP:
        t = tk.tanh(qk * (scale / softcap))
        return t * (softcap * LOG2E), (1.0 - t * t) * scale
    else:
        # the scalar itself, not a tile: ``qk * 0.0 + scale`` cannot be folded (0 * inf is NaN) and cost an
        # fma per score element in the backward
        return qk * (scale * LOG2E), scale


@tk.func
def _visible(rows, cols, Sq, Skv, diag, left, right):
    return ((rows[:, None] < Sq) & (cols[None, :] < Skv) & (cols[None, :] >= rows[:, None] + (diag - left))
            & (cols[None, :] <= rows[:, None] + (diag + right)))


@tk.func
def _key_block_range(m0, Skv, diag, left, right, BM: tk.constexpr, BN: tk.constexpr):
    """[lo, hi): the key blocks holding a visible key for some query row in [m0, m0 + BM), lo a multiple of
    BN. Blocks outside it are skipped, not masked (causal halves the work; a window bounds it). Called with
    queries and keys swapped, it gives the query blocks that see a key block."""
    lo = m0 + diag - left
    if lo < 0:
        lo = 0
    lo = (lo // BN) * BN
    hi = m0 + BM + diag + right
    if hi > Skv:
        hi = Skv
    return lo, hi


@tk.func
def _sequence_bounds(CuQ, CuK, b):
    """(first query row, query length, first key row, key length) of packed sequence ``b``."""
    q_start = tk.load(CuQ, (b,))
    k_start = tk.load(CuK, (b,))
    return q_start, tk.load(CuQ, (b + 1,)) - q_start, k_start, tk.load(CuK, (b + 1,)) - k_start


@tk.func
def _online_softmax_step(s2, m_i, l_i):
    """One key block of the online softmax over base-2 scores ``s2``: (new running max, the factor that
    rescales the old sum and accumulator, the block's probabilities, the new running sum)."""
    m_new = tk.maximum(m_i, tk.max(s2, axis=1))
    # A row with nothing visible yet keeps max -inf: subtract 0 instead, so exp2 gives 0, not NaN.
    m_safe = tk.where(m_new == -float("inf"), 0.0, m_new)
    alpha = tk.exp2(m_i - m_safe)
    p = tk.exp2(s2 - m_safe[:, None])
    return m_new, alpha, p, l_i * alpha + tk.sum(p, axis=1)


@tk.func
def _softmax_output(acc, m_i, l_i):
    """(o, lse) from the accumulator and the running max and sum; a row that saw no key gives 0, -inf."""
    empty = l_i == 0.0
    o = acc / tk.where(empty, 1.0, l_i)[:, None]
    return o, tk.where(empty, -float("inf"), m_i * LN2 + tk.log(tk.where(empty, 1.0, l_i)))


@tk.kernel(tunables=ATTENTION_TUNABLES)
def attention_fwd_kernel(Q, K, V, O, LSE, scale, softcap, left, right, SOFTCAP: tk.constexpr,
                         BM: tk.constexpr, BN: tk.constexpr, BD: tk.constexpr, ACC: tk.constexpr):
    """One program per (query block, batch x query head): O and LSE of BM query rows."""
    B, Hq, Sq, D = Q.shape
    Hkv = K.shape[1]
    Skv = K.shape[2]
    m0 = tk.program_id(0) * BM
    bh = tk.program_id(1)
    b = bh // Hq
    h = bh % Hq
    hk = h // (Hq // Hkv)
    diag = Skv - Sq
    lo, hi = _key_block_range(m0, Skv, diag, left, right, BM, BN)
    q = tk.load(Q, (b, h, m0, 0), (1, 1, BM, BD)).reshape((BM, BD))
    rows = m0 + tk.arange(BM)
    m_i = tk.full((BM,), -float("inf"), ACC)
    l_i = tk.zeros((BM,), ACC)
    acc = tk.zeros((BM, BD), ACC)
    for n0 in tk.range(lo, hi, BN):
        k = tk.load(K, (b, hk, n0, 0), (1, 1, BN, BD)).reshape((BN, BD))
        v = tk.load(V, (b, hk, n0, 0), (1, 1, BN, BD)).reshape((BN, BD))
        qk = tk.dot(q, k.T).to(ACC)
        s2, _ = _scores2(qk, scale, softcap, SOFTCAP)
        visible = _visible(rows, n0 + tk.arange(BN), Sq, Skv, diag, left, right)
        s2 = tk.where(visible, s2, -float("inf"))
        m_i, alpha, p, l_i = _online_softmax_step(s2, m_i, l_i)
        acc = acc * alpha[:, None] + tk.dot(p.to(V.dtype), v).to(ACC)
    o, lse = _softmax_output(acc, m_i, l_i)
    tk.store(O, (b, h, m0, 0), o.to(O.dtype).reshape((1, 1, BM, BD)))
    tk.store(LSE, (b, h, m0), lse.to(LSE.dtype).reshape((1, 1, BM)))


@tk.kernel(tunables=ATTENTION_TUNABLES)
def attention_bwd_delta_kernel(O, DO, Delta, BM: tk.constexpr, BD: tk.constexpr, ACC: tk.constexpr):
    """delta = rowsum(dO * O), one program per (query block, batch x head)."""
    B, H, Sq, D = O.shape
    m0 = tk.program_id(0) * BM
    bh = tk.program_id(1)
    b = bh // H
    h = bh % H
    o = tk.load(O, (b, h, m0, 0), (1, 1, BM, BD)).reshape((BM, BD)).to(ACC)
    do = tk.load(DO, (b, h, m0, 0), (1, 1, BM, BD)).reshape((BM, BD)).to(ACC)
    tk.store(Delta, (b, h, m0), tk.sum(o * do, axis=1).to(Delta.dtype).reshape((1, 1, BM)))


@tk.kernel(tunables=ATTENTION_TUNABLES)
def attention_bwd_dkdv_kernel(Q, K, V, DO, LSE, Delta, DK, DV, scale, softcap, left, right,
                              SOFTCAP: tk.constexpr, BM: tk.constexpr, BN: tk.constexpr, BD: tk.constexpr,
                              ACC: tk.constexpr):
    """One program per (key block, batch x key head): dK and dV of BN keys, summed over the query heads
    of the GQA group with a runtime loop (no atomics: deterministic)."""
    B, Hq, Sq, D = Q.shape
    Hkv = K.shape[1]
    Skv = K.shape[2]
    group = Hq // Hkv
    n0 = tk.program_id(0) * BN
    bhk = tk.program_id(1)
    b = bhk // Hkv
    hk = bhk % Hkv
    diag = Skv - Sq
    # Query blocks holding a row that sees a key in [n0, n0 + BN): the key range with queries and keys
    # swapped (the diagonal negated, the window's sides exchanged).
    lo, hi = _key_block_range(n0, Sq, -diag, right, left, BN, BM)
    k = tk.load(K, (b, hk, n0, 0), (1, 1, BN, BD)).reshape((BN, BD))
    v = tk.load(V, (b, hk, n0, 0), (1, 1, BN, BD)).reshape((BN, BD))
    cols = n0 + tk.arange(BN)
    dk = tk.zeros((BN, BD), ACC)
    dv = tk.zeros((BN, BD), ACC)
    for g in tk.range(0, group):
        h = hk * group + g
        for m0 in tk.range(lo, hi, BM):
            q = tk.load(Q, (b, h, m0, 0), (1, 1, BM, BD)).reshape((BM, BD))
            do = tk.load(DO, (b, h, m0, 0), (1, 1, BM, BD)).reshape((BM, BD))
            lse = tk.load(LSE, (b, h, m0), (1, 1, BM)).reshape((BM,)).to(ACC)
            delta = tk.load(Delta, (b, h, m0), (1, 1, BM)).reshape((BM,)).to(ACC)
            qk = tk.dot(q, k.T).to(ACC)
            s2, dscore = _scores2(qk, scale, softcap, SOFTCAP)
            visible = _visible(m0 + tk.arange(BM), cols, Sq, Skv, diag, left, right)
            lse2 = tk.where(lse == -float("inf"), 0.0, lse * LOG2E)
            p = tk.where(visible, tk.exp2(s2 - lse2[:, None]), 0.0)
            dv = dv + tk.dot(p.to(DO.dtype).T, do).to(ACC)
            dp = tk.dot(do, v.T).to(ACC)
            ds = p * (dp - delta[:, None]) * dscore
            dk = dk + tk.dot(ds.to(Q.dtype).T, q).to(ACC)
    tk.store(DK, (b, hk, n0, 0), dk.to(DK.dtype).reshape((1, 1, BN, BD)))
    tk.store(DV, (b, hk, n0, 0), dv.to(DV.dtype).reshape((1, 1, BN, BD)))


@tk.kernel(tunables=ATTENTION_TUNABLES)
def attention_bwd_dq_kernel(Q, K, V, DO, LSE, Delta, DQ, scale, softcap, left, right,
                            SOFTCAP: tk.constexpr, BM: tk.constexpr, BN: tk.constexpr, BD: tk.constexpr,
                            ACC: tk.constexpr):
    """One program per (query block, batch x query head): dQ over the visible key blocks."""
    B, Hq, Sq, D = Q.shape
    Hkv = K.shape[1]
    Skv = K.shape[2]
    m0 = tk.program_id(0) * BM
    bh = tk.program_id(1)
    b = bh // Hq
    h = bh % Hq
    hk = h // (Hq // Hkv)
    diag = Skv - Sq
    lo, hi = _key_block_range(m0, Skv, diag, left, right, BM, BN)
    q = tk.load(Q, (b, h, m0, 0), (1, 1, BM, BD)).reshape((BM, BD))
    do = tk.load(DO, (b, h, m0, 0), (1, 1, BM, BD)).reshape((BM, BD))
    lse = tk.load(LSE, (b, h, m0), (1, 1, BM)).reshape((BM,)).to(ACC)
    delta = tk.load(Delta, (b, h, m0), (1, 1, BM)).reshape((BM,)).to(ACC)
    lse2 = tk.where(lse == -float("inf"), 0.0, lse * LOG2E)
    rows = m0 + tk.arange(BM)
    dq = tk.zeros((BM, BD), ACC)
    for n0 in tk.range(lo, hi, BN):
        k = tk.load(K, (b, hk, n0, 0), (1, 1, BN, BD)).reshape((BN, BD))
        v = tk.load(V, (b, hk, n0, 0), (1, 1, BN, BD)).reshape((BN, BD))
        qk = tk.dot(q, k.T).to(ACC)
        s2, dscore = _scores2(qk, scale, softcap, SOFTCAP)
        visible = _visible(rows, n0 + tk.arange(BN), Sq, Skv, diag, left, right)
        p = tk.where(visible, tk.exp2(s2 - lse2[:, None]), 0.0)
        dp = tk.dot(do, v.T).to(ACC)
        ds = p * (dp - delta[:, None]) * dscore
        dq = dq + tk.dot(ds.to(K.dtype), k).to(ACC)
    tk.store(DQ, (b, h, m0, 0), dq.to(DQ.dtype).reshape((1, 1, BM, BD)))


@tk.kernel(tunables=ATTENTION_TUNABLES)
def attention_varlen_fwd_kernel(Q, K, V, O, LSE, CuQ, CuK, scale, softcap, left, right, SOFTCAP: tk.constexpr,
                                BM: tk.constexpr, BN: tk.constexpr, BD: tk.constexpr, ACC: tk.constexpr):
    """The forward over packed sequences: q (total_q, Hq, D), k/v (total_k, Hkv, D), cu_seqlens int32.
    One program per (query block of the longest sequence, sequence x head); a program past its
    sequence's end does nothing (no padding FLOPs)."""
    total_q, Hq, D = Q.shape
    Hkv = K.shape[1]
    m0 = tk.program_id(0) * BM
    bh = tk.program_id(1)
    b = bh // Hq
    h = bh % Hq
    hk = h // (Hq // Hkv)
    q_start, Sq, k_start, Skv = _sequence_bounds(CuQ, CuK, b)
    if m0 < Sq:
        diag = Skv - Sq
        lo, hi = _key_block_range(m0, Skv, diag, left, right, BM, BN)
        rows = m0 + tk.arange(BM)
        row_ok = rows < Sq
        q = tk.load(Q, (q_start + rows, h, 0), (BM, 1, BD), mask=row_ok[:, None, None]).reshape((BM, BD))
        m_i = tk.full((BM,), -float("inf"), ACC)
        l_i = tk.zeros((BM,), ACC)
        acc = tk.zeros((BM, BD), ACC)
        for n0 in tk.range(lo, hi, BN):
            cols = n0 + tk.arange(BN)
            col_ok = cols < Skv
            k = tk.load(K, (k_start + cols, hk, 0), (BN, 1, BD), mask=col_ok[:, None, None]).reshape((BN, BD))
            v = tk.load(V, (k_start + cols, hk, 0), (BN, 1, BD), mask=col_ok[:, None, None]).reshape((BN, BD))
            qk = tk.dot(q, k.T).to(ACC)
            s2, _ = _scores2(qk, scale, softcap, SOFTCAP)
            visible = _visible(rows, cols, Sq, Skv, diag, left, right)
            s2 = tk.where(visible, s2, -float("inf"))
            m_i, alpha, p, l_i = _online_softmax_step(s2, m_i, l_i)
            acc = acc * alpha[:, None] + tk.dot(p.to(V.dtype), v).to(ACC)
        o, lse = _softmax_output(acc, m_i, l_i)
        tk.store(O, (q_start + rows, h, 0), o.to(O.dtype).reshape((BM, 1, BD)), mask=row_ok[:, None, None])
        tk.store(LSE, (h, q_start + rows), lse.to(LSE.dtype).reshape((1, BM)), mask=row_ok[None, :])


@tk.kernel(tunables=ATTENTION_TUNABLES)
def attention_varlen_bwd_delta_kernel(O, DO, Delta, BM: tk.constexpr, BD: tk.constexpr, ACC: tk.constexpr):
    """delta = rowsum(dO * O) over packed rows: O, dO (total_q, Hq, D), Delta (Hq, total_q); one program per
    (row block, head). Rows past total_q read as 0 and are not written."""
    m0 = tk.program_id(0) * BM
    h = tk.program_id(1)
    o = tk.load(O, (m0, h, 0), (BM, 1, BD)).reshape((BM, BD)).to(ACC)
    do = tk.load(DO, (m0, h, 0), (BM, 1, BD)).reshape((BM, BD)).to(ACC)
    tk.store(Delta, (h, m0), tk.sum(o * do, axis=1).to(Delta.dtype).reshape((1, BM)))


@tk.kernel(tunables=ATTENTION_TUNABLES)
def attention_varlen_bwd_dkdv_kernel(Q, K, V, DO, LSE, Delta, DK, DV, CuQ, CuK, scale, softcap, left, right,
                                     SOFTCAP: tk.constexpr, BM: tk.constexpr, BN: tk.constexpr, BD: tk.constexpr,
                                     ACC: tk.constexpr):
    """dK and dV over packed sequences: one program per (key block of the longest sequence, sequence x key
    head), summing over the GQA group's query heads with a runtime loop (no atomics). A program past its
    sequence's end does nothing."""
    total_q, Hq, D = Q.shape
    Hkv = K.shape[1]
    group = Hq // Hkv
    n0 = tk.program_id(0) * BN
    bhk = tk.program_id(1)
    b = bhk // Hkv
    hk = bhk % Hkv
    q_start, Sq, k_start, Skv = _sequence_bounds(CuQ, CuK, b)
    if n0 < Skv:
        diag = Skv - Sq
        lo, hi = _key_block_range(n0, Sq, -diag, right, left, BN, BM)
        cols = n0 + tk.arange(BN)
        col_ok = cols < Skv
        k = tk.load(K, (k_start + cols, hk, 0), (BN, 1, BD), mask=col_ok[:, None, None]).reshape((BN, BD))
        v = tk.load(V, (k_start + cols, hk, 0), (BN, 1, BD), mask=col_ok[:, None, None]).reshape((BN, BD))
        dk = tk.zeros((BN, BD), ACC)
        dv = tk.zeros((BN, BD), ACC)
        for g in tk.range(0, group):
            h = hk * group + g
            for m0 in tk.range(lo, hi, BM):
                rows = m0 + tk.arange(BM)
                row_ok = rows < Sq
                q = tk.load(Q, (q_start + rows, h, 0), (BM, 1, BD), mask=row_ok[:, None, None]).reshape((BM, BD))
                do = tk.load(DO, (q_start + rows, h, 0), (BM, 1, BD), mask=row_ok[:, None, None]).reshape((BM, BD))
                lse = tk.load(LSE, (h, q_start + rows), (1, BM), mask=row_ok[None, :]).reshape((BM,)).to(ACC)
                delta = tk.load(Delta, (h, q_start + rows), (1, BM), mask=row_ok[None, :]).reshape((BM,)).to(ACC)
                qk = tk.dot(q, k.T).to(ACC)
                s2, dscore = _scores2(qk, scale, softcap, SOFTCAP)
                visible = _visible(rows, cols, Sq, Skv, diag, left, right)
                lse2 = tk.where(lse == -float("inf"), 0.0, lse * LOG2E)
                p = tk.where(visible, tk.exp2(s2 - lse2[:, None]), 0.0)
                dv = dv + tk.dot(p.to(DO.dtype).T, do).to(ACC)
                dp = tk.dot(do, v.T).to(ACC)
                ds = p * (dp - delta[:, None]) * dscore
                dk = dk + tk.dot(ds.to(Q.dtype).T, q).to(ACC)
        tk.store(DK, (k_start + cols, hk, 0), dk.to(DK.dtype).reshape((BN, 1, BD)), mask=col_ok[:, None, None])
        tk.store(DV, (k_start + cols, hk, 0), dv.to(DV.dtype).reshape((BN, 1, BD)), mask=col_ok[:, None, None])


@tk.kernel(tunables=ATTENTION_TUNABLES)
def attention_varlen_bwd_dq_kernel(Q, K, V, DO, LSE, Delta, DQ, CuQ, CuK, scale, softcap, left, right,
                                   SOFTCAP: tk.constexpr, BM: tk.constexpr, BN: tk.constexpr, BD: tk.constexpr,
                                   ACC: tk.constexpr):
    """dQ over packed sequences: one program per (query block of the longest sequence, sequence x query head);
    a program past its sequence's end does nothing."""
    total_q, Hq, D = Q.shape
    Hkv = K.shape[1]
    m0 = tk.program_id(0) * BM
    bh = tk.program_id(1)
    b = bh // Hq
    h = bh % Hq
    hk = h // (Hq // Hkv)
    q_start, Sq, k_start, Skv = _sequence_bounds(CuQ, CuK, b)
    if m0 < Sq:
        diag = Skv - Sq
        lo, hi = _key_block_range(m0, Skv, diag, left, right, BM, BN)
        rows = m0 + tk.arange(BM)
        row_ok = rows < Sq
        q = tk.load(Q, (q_start + rows, h, 0), (BM, 1, BD), mask=row_ok[:, None, None]).reshape((BM, BD))
        do = tk.load(DO, (q_start + rows, h, 0), (BM, 1, BD), mask=row_ok[:, None, None]).reshape((BM, BD))
        lse = tk.load(LSE, (h, q_start + rows), (1, BM), mask=row_ok[None, :]).reshape((BM,)).to(ACC)
        delta = tk.load(Delta, (h, q_start + rows), (1, BM), mask=row_ok[None, :]).reshape((BM,)).to(ACC)
        lse2 = tk.where(lse == -float("inf"), 0.0, lse * LOG2E)
        dq = tk.zeros((BM, BD), ACC)
        for n0 in tk.range(lo, hi, BN):
            cols = n0 + tk.arange(BN)
            col_ok = cols < Skv
            k = tk.load(K, (k_start + cols, hk, 0), (BN, 1, BD), mask=col_ok[:, None, None]).reshape((BN, BD))
            v = tk.load(V, (k_start + cols, hk, 0), (BN, 1, BD), mask=col_ok[:, None, None]).reshape((BN, BD))
            qk = tk.dot(q, k.T).to(ACC)
            s2, dscore = _scores2(qk, scale, softcap, SOFTCAP)
            visible = _visible(rows, cols, Sq, Skv, diag, left, right)
            p = tk.where(visible, tk.exp2(s2 - lse2[:, None]), 0.0)
            dp = tk.dot(do, v.T).to(ACC)
            ds = p * (dp - delta[:, None]) * dscore
            dq = dq + tk.dot(ds.to(K.dtype), k).to(ACC)
        tk.store(DQ, (q_start + rows, h, 0), dq.to(DQ.dtype).reshape((BM, 1, BD)), mask=row_ok[:, None, None])
