"""The two kernels of tilekit's user-facing contract (DESIGN.md), as importable kernels.

Tests, benchmarks and docs that need "the default matmul" or "the softmax example" use these, so the
contract lives in one place.
"""
import tilekit as tk


@tk.kernel
def matmul(A, B, C, BM: tk.constexpr = 64, BN: tk.constexpr = 64, BK: tk.constexpr = 32):
    M, K = A.shape
    N = B.shape[1]
    pm = tk.program_id(0)
    pn = tk.program_id(1)
    acc = tk.zeros((BM, BN), tk.float32)
    for k in tk.range(0, K, BK):
        a = tk.load(A, (pm * BM, k), (BM, BK))      # elements outside A read as 0
        b = tk.load(B, (k, pn * BN), (BK, BN))
        acc = tk.mma(a, b, acc)                     # acc + a @ b, fp32 accumulate
    tk.store(C, (pm * BM, pn * BN), acc.to(C.dtype))  # elements outside C are not written


@tk.kernel
def softmax(X, Y, BLOCK: tk.constexpr = 128):
    row = tk.program_id(0)
    x = tk.load(X, (row, 0), (1, BLOCK), other=-float("inf"))
    x = x - tk.max(x, axis=1)[:, None]
    e = tk.exp(x)
    tk.store(Y, (row, 0), e / tk.sum(e, axis=1)[:, None])
