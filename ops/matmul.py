"""``tilekit::matmul(Tensor a, Tensor b) -> Tensor``: 2-D ``a @ b`` written in the tilekit DSL.

Output dtype = input dtype; fp16/bf16/fp32 accumulate in fp32 (float64, accepted for gradient checks,
accumulates in float64). Autograd: grad_a = g @ b.T and grad_b = a.T @ g, both through this same op.
"""
import torch

import tilekit as tk

from .dispatch import (backend_for, check_same, check_tensor, checked_config, clamp_pow2, elem_bytes,
                       provided_config)

OP_NAME = "matmul"

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


def _accumulator_dtype(dtype):
    return tk.float64 if dtype == torch.float64 else tk.float32


def _default_config(shape, dtype, device):
    m, n, k = shape
    if device.type == "cpu":
        # Reference executor and Triton interpreter pay per program and per loop iteration, so take
        # the biggest blocks the shape can use; one pipeline stage (there is no pipeline).
        config = {"BM": clamp_pow2(m, 16, 128), "BN": clamp_pow2(n, 16, 128), "BK": clamp_pow2(k, 16, 128),
                  "num_warps": 8, "num_stages": 1}
    else:
        bm, bn = clamp_pow2(m, 16, 128), clamp_pow2(n, 16, 128)
        config = {"BM": bm, "BN": bn, "BK": clamp_pow2(k, 16, 32),
                  "num_warps": 8 if bm * bn >= 128 * 128 else 4, "num_stages": 3}
    # Wide dtypes (float64) may overflow the shared-memory budget: give up stages, then depth.
    size = elem_bytes(dtype)
    while not MATMUL_TUNABLES.is_valid({**config, "elem_bytes": size}):
        if config["num_stages"] > 1:
            config["num_stages"] -= 1
        elif config["BK"] > 16:
            config["BK"] //= 2
        else:
            break
    return checked_config(OP_NAME, config, MATMUL_TUNABLES, size)


def _config_for(shape, dtype, device):
    """The config for an (M, N, K) matmul: the config provider's (autotuner) if it has one, else the default."""
    size = elem_bytes(dtype)
    return (provided_config(OP_NAME, shape, dtype, device, MATMUL_TUNABLES, size)
            or _default_config(shape, dtype, device))


def _check_inputs(a, b):
    check_tensor(OP_NAME, "a", a, ranks=(2,))
    check_tensor(OP_NAME, "b", b, ranks=(2,))
    check_same(OP_NAME, {"a": a, "b": b})
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"tilekit::matmul: shapes do not chain: a is {tuple(a.shape)}, b is {tuple(b.shape)} "
                         f"(a.shape[1] must equal b.shape[0])")


@torch.library.custom_op("tilekit::matmul", mutates_args=())
def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    _check_inputs(a, b)
    m, k = a.shape
    n = b.shape[1]
    c = torch.empty((m, n), dtype=a.dtype, device=a.device)
    if m == 0 or n == 0:
        return c
    backend = backend_for(a.device)
    config = _config_for((m, n, k), a.dtype, a.device)
    bm, bn = config["BM"], config["BN"]
    grid = (tk.cdiv(m, bm), tk.cdiv(n, bn))
    # K == 0 runs no loop iteration and stores the zero accumulator, as a @ b does.
    matmul_kernel[grid](a, b, c, BM=bm, BN=bn, BK=config["BK"], ACC=_accumulator_dtype(a.dtype),
                        backend=backend, num_warps=config["num_warps"], num_stages=config["num_stages"])
    return c


@matmul.register_fake
def _matmul_fake(a, b):
    _check_inputs(a, b)
    return a.new_empty((a.shape[0], b.shape[1]))


def _matmul_setup_context(ctx, inputs, output):
    a, b = inputs
    ctx.save_for_backward(a, b)


def _matmul_backward(ctx, grad):
    a, b = ctx.saved_tensors
    grad_a = grad_b = None
    # .T views are strided, not copied: the kernel reads any strides.
    if ctx.needs_input_grad[0]:
        grad_a = torch.ops.tilekit.matmul(grad, b.T)
    if ctx.needs_input_grad[1]:
        grad_b = torch.ops.tilekit.matmul(a.T, grad)
    return grad_a, grad_b


matmul.register_autograd(_matmul_backward, setup_context=_matmul_setup_context)


def matmul_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The PyTorch oracle for ``tilekit::matmul``: same contract, fp32 (float64) accumulate."""
    wide = torch.float64 if a.dtype == torch.float64 else torch.float32
    return (a.to(wide) @ b.to(wide)).to(a.dtype)


def kernel_example(shape=(4096, 4096, 4096), dtype=torch.float16, device=torch.device("cuda")):
    """(kernel, example args, launch kwargs) for an (M, N, K) matmul: what `tilekit show/compile` use.
    Tensors are on the meta device; ``device`` only picks the config family."""
    m, n, k = shape
    a = torch.empty(m, k, dtype=dtype, device="meta")
    b = torch.empty(k, n, dtype=dtype, device="meta")
    c = torch.empty(m, n, dtype=dtype, device="meta")
    config = _config_for((m, n, k), dtype, torch.device(device))
    kwargs = dict(BM=config["BM"], BN=config["BN"], BK=config["BK"], ACC=_accumulator_dtype(dtype),
                  num_warps=config["num_warps"], num_stages=config["num_stages"])
    return matmul_kernel, (a, b, c), kwargs
