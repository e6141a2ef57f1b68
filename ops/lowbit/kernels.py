"""lowbit_linear's DSL kernels: a GEMV / split-K kernel (M <= 16) and a tiled GEMM, one family for every
format. The format is compile time: WKIND (how a code becomes a value), SKIND (how a scale is stored), and
HAS_ZERO / HAS_PERM / HAS_BIAS. Weights are ``tk.load``-ed from the packed (N, K) tensor at logical
coordinates (the backends read each row's covering words as one vector load) and dequantized in registers."""
import tilekit as tk

# WKIND: what ``code.to(float32)`` still needs
W_VALUE = 0      # ints (sign-extended by the load) and small floats: the code's value is the value
W_SIGN = 1       # int1: bit 1 is -1, bit 0 is +1
# SKIND: how scales are stored
S_FP16 = 0       # fp16 tensor
S_E8M0 = 1       # uint8 biased exponents (mxfp4): 2^(e - 127)
S_E4M3 = 2       # packed float8_e4m3 block scales times the fp32 tensor scale GS[0] (nvfp4)

SHARED_MEMORY_BUDGET = 160 * 1024
MAX_VALUES_PER_THREAD = 128


def _gemv_rule(config):
    per_thread = config["BM"] * config["BN"] * config["BK"] // (32 * config["num_warps"])
    if per_thread > MAX_VALUES_PER_THREAD:
        return (f"a {config['BM']}x{config['BN']}x{config['BK']} product tile over {config['num_warps']} warps "
                f"is {per_thread} values per thread, more than {MAX_VALUES_PER_THREAD}")
    return True


def _gemm_rule(config):
    bm, bn, bk = config["BM"], config["BN"], config["BK"]
    staged = (bm * bk * config.get("elem_bytes", 4) + bn * bk) * config["num_stages"]
    if staged > SHARED_MEMORY_BUDGET:
        return f"operand tiles need {staged} bytes of shared memory, more than {SHARED_MEMORY_BUDGET}"
    per_thread = bm * bn // (32 * config["num_warps"])
    if per_thread > MAX_VALUES_PER_THREAD:
        return f"a {bm}x{bn} accumulator is {per_thread} values per thread, more than {MAX_VALUES_PER_THREAD}"
    return True


GEMV_TUNABLES = tk.Tunables(
    {"BM": [1, 2, 4, 8, 16], "BN": [8, 16, 32, 64, 128], "BK": [16, 32, 64, 128, 256],
     "SPLIT_K": [1, 2, 4, 8, 16], "num_warps": [1, 2, 4, 8], "num_stages": [1, 2, 3, 4]},
    valid=_gemv_rule,
    default={"BM": 1, "BN": 32, "BK": 128, "SPLIT_K": 1, "num_warps": 4, "num_stages": 2},
)

GEMM_TUNABLES = tk.Tunables(
    {"BM": [16, 32, 64, 128], "BN": [16, 32, 64, 128, 256], "BK": [16, 32, 64, 128],
     "num_warps": [2, 4, 8], "num_stages": [1, 2, 3, 4]},
    valid=_gemm_rule,
    default={"BM": 64, "BN": 128, "BK": 64, "num_warps": 4, "num_stages": 3},
)


@tk.kernel(tunables=GEMV_TUNABLES)
def lowbit_gemv_kernel(X, W, S, Z, GS, P, Bias, Y, blocks_per_split,
                       BM: tk.constexpr, BN: tk.constexpr, BK: tk.constexpr, GROUP: tk.constexpr,
                       WKIND: tk.constexpr, SKIND: tk.constexpr, HAS_ZERO: tk.constexpr,
                       HAS_PERM: tk.constexpr, HAS_BIAS: tk.constexpr, SPLIT_K: tk.constexpr,
                       ACC: tk.constexpr):
    """Y[:M, n0:n0+BN] (+)= X[:M, ks] @ W[n0:n0+BN, ks].T for one K slice ``ks`` of ``blocks_per_split * BK`` columns
    (program axis 1). Every packed weight word is read by exactly one program, once. SPLIT_K > 1
    accumulates fp32 partial sums into Y with atomics (the finish kernel adds the bias and converts)."""
    M, K = X.shape
    n0 = tk.program_id(0) * BN
    # max(., 0): the host passes >= 1; saying so proves k >= 0, so no load masks k's lower bound
    blocks = tk.maximum(blocks_per_split, 0)
    k_lo = tk.program_id(1) * blocks * BK     # a known multiple of BK: aligned vector loads
    k_hi = k_lo + blocks * BK
    if SPLIT_K == 1:      # the same K range, bounds the compiler sees (W4 GEMV: 14 fewer PTX instructions)
        k_lo = 0
        k_hi = K
    acc = tk.zeros((BM, BN), ACC)
    for k in tk.range(k_lo, k_hi, BK):
        code = tk.load(W, (n0, k), (BN, BK)).to(ACC)
        if WKIND == 1:
            code = 1.0 - 2.0 * code
        if HAS_PERM:
            cols = tk.load(P, (k,), (BK,))       # past K: index 0, masked off (w need not be 0 there)
            x = tk.load(X, (0, cols), (BM, BK), mask=((k + tk.arange(BK)) < K)[None, :]).to(ACC)
        else:
            x = tk.load(X, (0, k), (BM, BK)).to(ACC)
        if GROUP % BK == 0:
            # one scale (and zero) per row, applied to the row's partial sum: a thread loads one, not one per row
            # it holds (bench/abstraction/lowbit.py's bytes per weight)
            s = tk.reshape(tk.load(S, (n0, k // GROUP), (BN, 1)), (1, BN)).to(ACC)
        else:
            inside = (k + tk.arange(BK)) < K
            g = (k + tk.arange(BK)) // GROUP
            s = tk.load(S, (n0, g), (BN, BK), mask=inside[None, :]).to(ACC)
            if HAS_ZERO:
                code = code - tk.load(Z, (n0, g), (BN, BK), mask=inside[None, :]).to(ACC)
        if SKIND == 1:
            s = tk.exp2(s - 127.0)
        if SKIND == 2:
            s = s * tk.load(GS, (0,)).to(ACC)
        if GROUP % BK == 0:
            part = tk.sum(x[:, None, :] * code[None, :, :], axis=2)
            if HAS_ZERO:
                z = tk.reshape(tk.load(Z, (n0, k // GROUP), (BN, 1)), (1, BN)).to(ACC)
                part = part - tk.sum(x, axis=1)[:, None] * z
            acc += part * s
        else:
            acc += tk.sum(x[:, None, :] * (code * s)[None, :, :], axis=2)
    if SPLIT_K == 1:
        if HAS_BIAS:
            acc = acc + tk.load(Bias, (n0,), (BN,)).to(ACC)[None, :]
        tk.store(Y, (0, n0), acc.to(Y.dtype))
    else:
        tk.atomic_add(Y, (0, n0), acc)


@tk.kernel
def lowbit_finish_kernel(Acc, Bias, Y, HAS_BIAS: tk.constexpr, BM: tk.constexpr, BN: tk.constexpr):
    """Y = Acc (+ Bias), converted to Y's dtype: the epilogue of a split-K GEMV."""
    n0 = tk.program_id(0) * BN
    out = tk.load(Acc, (0, n0), (BM, BN))
    if HAS_BIAS:
        out = out + tk.load(Bias, (n0,), (BN,)).to(out.dtype)[None, :]
    tk.store(Y, (0, n0), out.to(Y.dtype))


@tk.kernel(tunables=GEMM_TUNABLES)
def lowbit_gemm_kernel(X, W, S, Z, GS, P, Bias, Y,
                       BM: tk.constexpr, BN: tk.constexpr, BK: tk.constexpr, GROUP: tk.constexpr,
                       WKIND: tk.constexpr, SKIND: tk.constexpr, HAS_ZERO: tk.constexpr,
                       HAS_PERM: tk.constexpr, HAS_BIAS: tk.constexpr, ACC: tk.constexpr):
    """Y[m0:m0+BM, n0:n0+BN] = X @ dequant(W).T (+ Bias): the weight tile is decoded in registers and fed
    to tk.mma in X's dtype, accumulated in ACC."""
    M, K = X.shape
    m0 = tk.program_id(0) * BM
    n0 = tk.program_id(1) * BN
    acc = tk.zeros((BM, BN), ACC)
    for k in tk.range(0, K, BK):
        code = tk.load(W, (n0, k), (BN, BK)).to(tk.float32)
        if WKIND == 1:
            code = 1.0 - 2.0 * code
        if GROUP % BK == 0:
            s = tk.load(S, (n0, k // GROUP), (BN, 1)).to(tk.float32)
            if HAS_ZERO:
                code = code - tk.load(Z, (n0, k // GROUP), (BN, 1)).to(tk.float32)
        else:
            inside = (k + tk.arange(BK)) < K
            g = (k + tk.arange(BK)) // GROUP
            s = tk.load(S, (n0, g), (BN, BK), mask=inside[None, :]).to(tk.float32)
            if HAS_ZERO:
                code = code - tk.load(Z, (n0, g), (BN, BK), mask=inside[None, :]).to(tk.float32)
        if SKIND == 1:
            s = tk.exp2(s - 127.0)
        if SKIND == 2:
            s = s * tk.load(GS, (0,))
        w = (code * s).to(X.dtype)
        if HAS_PERM:
            cols = tk.load(P, (k,), (BK,))
            x = tk.load(X, (m0, cols), (BM, BK), mask=((k + tk.arange(BK)) < K)[None, :])
        else:
            x = tk.load(X, (m0, k), (BM, BK))
        acc = tk.mma(x, w.T, acc)
    if HAS_BIAS:
        acc = acc + tk.load(Bias, (n0,), (BN,)).to(ACC)[None, :]
    tk.store(Y, (m0, n0), acc.to(Y.dtype))


@tk.kernel
def lowbit_dequant_kernel(W, S, Z, GS, P, Out, BN: tk.constexpr, BK: tk.constexpr, GROUP: tk.constexpr,
                          WKIND: tk.constexpr, SKIND: tk.constexpr, HAS_ZERO: tk.constexpr,
                          HAS_PERM: tk.constexpr, ACC: tk.constexpr):
    """Out[n, perm[k]] = dequant(W)[n, k]: the weight in x's column order, for the backward pass only."""
    N, K = Out.shape
    n0 = tk.program_id(0) * BN
    k = tk.program_id(1) * BK
    inside = (k + tk.arange(BK)) < K
    code = tk.load(W, (n0, k), (BN, BK)).to(ACC)
    if WKIND == 1:
        code = 1.0 - 2.0 * code
    g = (k + tk.arange(BK)) // GROUP
    s = tk.load(S, (n0, g), (BN, BK), mask=inside[None, :]).to(ACC)
    if HAS_ZERO:
        code = code - tk.load(Z, (n0, g), (BN, BK), mask=inside[None, :]).to(ACC)
    if SKIND == 1:
        s = tk.exp2(s - 127.0)
    if SKIND == 2:
        s = s * tk.load(GS, (0,)).to(ACC)
    w = code * s
    if HAS_PERM:
        cols = tk.load(P, (k,), (BK,))
        tk.store(Out, (n0, cols), w, mask=inside[None, :])
    else:
        tk.store(Out, (n0, k), w)
