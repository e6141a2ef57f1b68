"""softmax's DSL kernels (forward and backward) and their tunables."""
import tilekit as tk

# fp32 values each thread may hold for one BM x BN block (the loaded tile plus its exponentials).
MAX_VALUES_PER_THREAD = 64


def _softmax_config_rule(config):
    """Valid if one BM x BN block spread over the warps stays within a register budget per thread."""
    per_thread = config["BM"] * config["BN"] // (32 * config["num_warps"])
    if per_thread > MAX_VALUES_PER_THREAD:
        return (f"a {config['BM']}x{config['BN']} block over {config['num_warps']} warps is {per_thread} values "
                f"per thread, more than {MAX_VALUES_PER_THREAD}")
    return True


SOFTMAX_TUNABLES = tk.Tunables(
    {
        "BM": [1, 2, 4, 8, 16, 32, 64],
        "BN": [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192],
        "num_warps": [1, 2, 4, 8, 16],
    },
    valid=_softmax_config_rule,
    default={"BM": 1, "BN": 1024, "num_warps": 4},
)


@tk.kernel(tunables=SOFTMAX_TUNABLES)
def softmax_kernel(X, Y, BM: tk.constexpr, BN: tk.constexpr, ACC: tk.constexpr):
    """Y = softmax(X, axis=1) for BM rows per program, reading each row in BN-wide column blocks."""
    M, N = X.shape
    row = tk.program_id(0) * BM
    running_max = tk.full((BM,), -float("inf"), ACC)
    running_sum = tk.zeros((BM,), ACC)
    for col in tk.range(0, N, BN):
        # Columns past N must not count: make them -inf (exp -> 0). Rows past M read 0 and stay
        # finite, so they produce no NaN; they are never stored.
        in_row = (col + tk.arange(BN))[None, :] < N
        x = tk.where(in_row, tk.load(X, (row, col), (BM, BN)).to(ACC), -float("inf"))
        new_max = tk.maximum(running_max, tk.max(x, axis=1))
        # Rescale the sum so far to the new max, then add this block's terms.
        running_sum = running_sum * tk.exp(running_max - new_max) + tk.sum(tk.exp(x - new_max[:, None]), axis=1)
        running_max = new_max
    for col in tk.range(0, N, BN):
        x = tk.load(X, (row, col), (BM, BN)).to(ACC)
        y = tk.exp(x - running_max[:, None]) / running_sum[:, None]
        tk.store(Y, (row, col), y.to(Y.dtype))


@tk.kernel(tunables=SOFTMAX_TUNABLES)
def softmax_backward_kernel(G, Y, DX, BM: tk.constexpr, BN: tk.constexpr, ACC: tk.constexpr):
    """DX = Y * (G - sum(G * Y, axis=1)): the gradient of softmax given its output Y and upstream grad G."""
    M, N = Y.shape
    row = tk.program_id(0) * BM
    dot = tk.zeros((BM,), ACC)
    for col in tk.range(0, N, BN):
        # Out-of-range elements read as 0 in both, so their product adds nothing.
        g = tk.load(G, (row, col), (BM, BN)).to(ACC)
        y = tk.load(Y, (row, col), (BM, BN)).to(ACC)
        dot = dot + tk.sum(g * y, axis=1)
    for col in tk.range(0, N, BN):
        g = tk.load(G, (row, col), (BM, BN)).to(ACC)
        y = tk.load(Y, (row, col), (BM, BN)).to(ACC)
        tk.store(DX, (row, col), (y * (g - dot[:, None])).to(DX.dtype))
