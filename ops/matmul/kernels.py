"""matmul's DSL kernel and its tunables."""
import torch

import tilekit as tk

# Shared memory an H100/MI300-class GPU gives one block, keeping headroom below the 227 KiB maximum.
SHARED_MEMORY_BUDGET = 160 * 1024
# fp32 accumulator values each thread may hold before registers spill (of 255 per thread).
MAX_ACC_PER_THREAD = 128


def _matmul_config_rule(config):
    """Valid if the pipelined operand tiles fit the shared-memory budget and the accumulator fits registers.

    ``elem_bytes`` is not a tunable: callers that know the dtype pass it in the config; without it the
    rule assumes 4 bytes, the widest of fp16/bf16/fp32.
    """
    bm, bn, bk = config["BM"], config["BN"], config["BK"]
    staged = (bm * bk + bk * bn) * config.get("elem_bytes", 4) * config["num_stages"]
    if staged > SHARED_MEMORY_BUDGET:
        return (f"operand tiles need {staged} bytes of shared memory over {config['num_stages']} stages, "
                f"more than the {SHARED_MEMORY_BUDGET}-byte budget")
    per_thread = bm * bn // (32 * config["num_warps"])
    if per_thread > MAX_ACC_PER_THREAD:
        return (f"a {bm}x{bn} accumulator over {config['num_warps']} warps is {per_thread} values per thread, "
                f"more than {MAX_ACC_PER_THREAD}")
    return True


MATMUL_TUNABLES = tk.Tunables(
    {
        "BM": [16, 32, 64, 128, 256],
        "BN": [16, 32, 64, 128, 256],
        "BK": [16, 32, 64, 128],
        "num_warps": [2, 4, 8],
        "num_stages": [1, 2, 3, 4, 5],
    },
    valid=_matmul_config_rule,
    default={"BM": 128, "BN": 128, "BK": 32, "num_warps": 8, "num_stages": 3},
)


@tk.kernel(tunables=MATMUL_TUNABLES)
def matmul_kernel(A, B, C, BM: tk.constexpr, BN: tk.constexpr, BK: tk.constexpr, ACC: tk.constexpr):
    """C[M, N] = A[M, K] @ B[K, N]; one BM x BN tile of C per program, accumulated in ``ACC``."""
    M, K = A.shape
    N = B.shape[1]
    row = tk.program_id(0) * BM
    col = tk.program_id(1) * BN
    acc = tk.zeros((BM, BN), ACC)
    for k in tk.range(0, K, BK):
        a = tk.load(A, (row, k), (BM, BK))  # reads past M or K are 0, so they add nothing
        b = tk.load(B, (k, col), (BK, BN))
        acc = tk.mma(a, b, acc)
    tk.store(C, (row, col), acc.to(C.dtype))


def accumulator_dtype(dtype):
    return tk.float64 if dtype == torch.float64 else tk.float32
