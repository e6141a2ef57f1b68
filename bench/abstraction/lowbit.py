"""lowbit abstraction cost and bytes per weight, from compiled sm_90 code (no GPU needed).

1. Abstraction cost: tilekit's W4 GEMV (M = 1) and GEMM (M = 512) at 4096 x 4096, group 128, against hand-written
   Triton W4A16 kernels with the same tiles and algorithm (the GEMV scales each row's partial sum, the GEMM each
   weight before the dot) (PTX instructions and registers; goal: ratio <= 1.05).
2. Bytes per weight: for the GEMV of every width 1..8 (group 128), the static ld.global width x count of the
   kernel (its only loop is the K loop; nothing is loaded outside it for these flags) times 128 threads, over
   the BN x BK weights of one iteration. Ideal: bits/8 + 2/group (fp16 scales). x's share (BM*BK*2 bytes per
   iteration) is listed apart. The hand W4 GEMV, compiled at the same tile, is measured the same way.

    python bench/abstraction/lowbit.py [--target sm_90] [--aot] [--cpu]
"""
from __future__ import annotations

import argparse
import sys

import torch
import triton
import triton.language as tl

from tilekit.backends import TARGETS
from tilekit.backends.triton.gpu_compile import cubin_resources
from tilekit.artifact import ptx_global_loads, summarize_ptx
from tilekit.ops.lowbit import op

N = K = 4096
GROUP = 128


@triton.jit
def hand_w4_gemv(X, W, S, Y, M, N, K, w_stride, s_stride,
                 BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP: tl.constexpr):
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    rm = tl.arange(0, BM)
    acc = tl.zeros((BM, BN), tl.float32)
    for k in range(0, K, BK):
        rw = k // 8 + tl.arange(0, BK // 8)
        words = tl.load(W + rn[:, None] * w_stride + rw[None, :], mask=rn[:, None] < N, other=0)
        codes = (words[:, :, None] >> (tl.arange(0, 8) * 4)[None, None, :]) & 0xF
        codes = tl.reshape(codes, (BN, BK))
        s = tl.load(S + rn * s_stride + k // GROUP, mask=rn < N, other=0.0).to(tl.float32)
        w = ((codes ^ 8) - 8).to(tl.float32)
        rk = k + tl.arange(0, BK)
        x = tl.load(X + rm[:, None] * K + rk[None, :], mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)
        # BK divides GROUP: one scale per row, applied to the row's partial sum (as the tilekit kernel does)
        acc += tl.sum(x.to(tl.float32)[:, None, :] * w[None, :, :], axis=2) * s[None, :]
    tl.store(Y + rm[:, None] * N + rn[None, :], acc.to(tl.float16), mask=(rm[:, None] < M) & (rn[None, :] < N))


@triton.jit
def hand_w4_gemm(X, W, S, Y, M, N, K, w_stride, s_stride,
                 BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP: tl.constexpr):
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    acc = tl.zeros((BM, BN), tl.float32)
    for k in range(0, K, BK):
        rw = k // 8 + tl.arange(0, BK // 8)
        words = tl.load(W + rn[:, None] * w_stride + rw[None, :], mask=rn[:, None] < N, other=0)
        codes = (words[:, :, None] >> (tl.arange(0, 8) * 4)[None, None, :]) & 0xF
        codes = tl.reshape(codes, (BN, BK))
        s = tl.load(S + rn * s_stride + k // GROUP, mask=rn < N, other=0.0).to(tl.float32)
        w = (((codes ^ 8) - 8).to(tl.float32) * s[:, None]).to(tl.float16)
        rk = k + tl.arange(0, BK)
        x = tl.load(X + rm[:, None] * K + rk[None, :], mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)
        acc = tl.dot(x, tl.trans(w), acc)
    tl.store(Y + rm[:, None] * N + rn[None, :], acc.to(tl.float16), mask=(rm[:, None] < M) & (rn[None, :] < N))


def compile_hand(fn, cx, target, asm=False):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    _, backend, arch, warp = TARGETS[target]
    sig = {"X": "*fp16", "W": "*i32", "S": "*fp16", "Y": "*fp16", "M": "i32", "N": "i32", "K": "i32",
           "w_stride": "i32", "s_stride": "i32", **{k: "constexpr" for k in cx}}
    attrs = {(i,): [["tt.divisibility", 16]] for i in (0, 1, 2, 3, 5, 6, 7)}
    c = triton.compile(ASTSource(fn, sig, dict(cx), attrs), target=GPUTarget(backend, arch, warp),
                       options={"num_warps": 4})
    out = {"instructions": summarize_ptx(c.asm["ptx"])["ptx_instructions"],
           "registers": cubin_resources(c.asm["cubin"]).get("registers")}
    return {**out, "ptx": c.asm["ptx"]} if asm else out


def compile_tilekit(fmt, m, target, overrides=None):
    kernel, args, kwargs = op.kernel_example((m, N, K), torch.float16, torch.device("cuda"), fmt=fmt,
                                             group_size=GROUP)
    kwargs = {**kwargs, **(overrides or {})}
    if "SPLIT_K" in kwargs and kwargs["SPLIT_K"] == 1:
        y = torch.empty(m, N, dtype=torch.float16, device="meta")
        args = (*args[:7], y, -(-K // kwargs["BK"]))
    return kernel.compile(target, *args, **kwargs), kwargs


def abstraction_rows(target):
    rows = []
    for name, fmt, m, hand in (("W4 GEMV M=1", "int4", 1, hand_w4_gemv), ("W4 GEMM M=512", "int4", 512, hand_w4_gemm)):
        over = {"SPLIT_K": 1} if m == 1 else {}
        art, kw = compile_tilekit(fmt, m, target, over)
        t = {"instructions": art.instructions["ptx_instructions"], "registers": art.resources["registers"]}
        h = compile_hand(hand, {"BM": kw["BM"], "BN": kw["BN"], "BK": kw["BK"], "GROUP": GROUP}, target)
        rows.append((f"{name} {kw['BM']}x{kw['BN']}x{kw['BK']}", t, h))
    return rows


def _per_weight(ptx, kw):
    """(every ld.global, the 32-bit ones) in bytes x threads over the BN x BK weights of one iteration."""
    loads = ptx_global_loads(ptx)
    scale = 32 * kw["num_warps"] / (kw["BN"] * kw["BK"])
    # the packed words are the only 32-bit loads (x and the scales are fp16 and load as b16 here)
    return sum(v * b // 8 for v, b in loads) * scale, sum(v * b // 8 for v, b in loads if b == 32) * scale


def bytes_per_weight_rows(target):
    """Per width: (bits, config, issued, x share, w+scale, ideal, weights, widest), and the hand W4 GEMV's row
    at the int4 tile (widest None)."""
    rows = []
    for bits in range(1, 9):
        fmt = "int1" if bits == 1 else f"int{bits}"
        art, kw = compile_tilekit(fmt, 1, target, {"SPLIT_K": 1})
        issued, w_only = _per_weight(art.asm["ptx"], kw)
        x_share = kw["BM"] * kw["BK"] * 2 / (kw["BN"] * kw["BK"])
        cfg = f"{kw['BN']}x{kw['BK']}"
        rows.append((str(bits), cfg, issued, x_share, issued - x_share, bits / 8 + 2 / GROUP, w_only,
                     art.instructions["widest_global_load_bits"]))
        if bits == 4:
            h = compile_hand(hand_w4_gemv, {"BM": kw["BM"], "BN": kw["BN"], "BK": kw["BK"], "GROUP": GROUP}, target,
                             asm=True)
            h_issued, h_w = _per_weight(h["ptx"], kw)
            hand_row = ("hand4", cfg, h_issued, x_share, h_issued - x_share, bits / 8 + 2 / GROUP, h_w, None)
    return rows + [hand_row]


AOT_FORMATS = ("int1", "int2", "int3", "int4", "int5", "int6", "int7", "int8", "uint4", "uint8", "fp4_e2m1",
               "fp6_e3m2", "fp8_e4m3", "fp8_e5m2", "mxfp4", "nvfp4")


def aot_rows(formats=AOT_FORMATS, targets=("sm_80", "sm_90", "gfx90a", "gfx942")):
    """(target, fmt, M, config, registers, spills, widest load, matrix instructions) of the GEMV (M = 1) and GEMM
    (M = 512) at 4096 x 4096, group 128, each at the op's default config for that target."""
    rows = []
    for target in targets:
        for fmt in formats:
            for m in (1, 512):
                kernel, args, kwargs = op.kernel_example((m, N, K), torch.float16, torch.device("cuda"), fmt=fmt,
                                                         group_size=GROUP, target=target)
                art = kernel.compile(target, *args, **kwargs)
                res, ins = art.resources, art.instructions
                cfg = "x".join(str(kwargs[k]) for k in ("BM", "BN", "BK"))
                if "SPLIT_K" in kwargs:
                    cfg += f" split {kwargs['SPLIT_K']}"
                matrix = sum(ins.get(k, 0) for k in ("wgmma", "mma.sync", "mfma"))
                rows.append((target, fmt, m, cfg, res.get("registers") or res.get("vgprs"), res["spills"],
                             ins["widest_global_load_bits"], matrix))
    return rows


def cpu_rows(n=1024, k=1024, repeats=5):
    """OpenCL (PoCL) lowbit_linear vs eager dequantize-then-matmul (the problem's reference style) and fp16
    torch.matmul, wall time per call (median), at M = 1 and M = 64, int4 group 128."""
    import time
    import tilekit.ops
    from tilekit import quant
    w = torch.randn(n, k)
    qw = quant.quantize(w, "int4", group_size=GROUP)
    w16 = w.to(torch.float16)

    def median_ms(fn):
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        return sorted(times)[len(times) // 2]

    rows = []
    for m in (1, 64):
        x = torch.randn(m, k, dtype=torch.float16)
        with tilekit.ops.use_backend("opencl"):
            tk_ms = median_ms(lambda: tilekit.ops.lowbit_linear(x, qw))
        deq_ms = median_ms(lambda: x @ qw.dequantize(torch.float16).T)
        fp16_ms = median_ms(lambda: x @ w16.T)
        rows.append((m, tk_ms, deq_ms, fp16_ms))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="sm_90", choices=[t for t in sorted(TARGETS) if t.startswith("sm_")])
    ap.add_argument("--cpu", action="store_true", help="also time OpenCL (PoCL) against the eager baselines")
    ap.add_argument("--aot", action="store_true", help="also the AOT table: every format's GEMV and GEMM on "
                    "sm_80, sm_90, gfx90a and gfx942 (registers, spills, widest load, matrix instructions)")
    args = ap.parse_args(argv)
    if args.aot:
        print(f"AOT at the default configs, {N}x{K}, group {GROUP} (M = 1: GEMV, M = 512: GEMM)")
        print(f"{'target':<7} {'fmt':<9} {'M':>4} {'config':<16} {'regs':>5} {'spills':>6} {'widest':>6} {'matrix':>6}")
        for target, fmt, m, cfg, regs, spills, widest, matrix in aot_rows():
            print(f"{target:<7} {fmt:<9} {m:>4} {cfg:<16} {regs:>5} {spills:>6} {widest:>6} {matrix:>6}")
        print()
    if args.cpu:
        print("CPU, int4 group 128, N = K = 1024, ms per call (median of 5)")
        print(f"{'M':>4} {'tilekit opencl':>14} {'dequant+matmul':>15} {'fp16 matmul':>12}")
        for m, a, b, c in cpu_rows():
            print(f"{m:>4} {a:>14.3f} {b:>15.3f} {c:>12.3f}")
        print()
    print(f"Abstraction cost on {args.target} (fp16 x, int4 group {GROUP}, {N}x{K}; tilekit / hand-written Triton)")
    print(f"{'kernel':<30} {'metric':<13} {'tilekit':>9} {'hand':>9} {'ratio':>7}")
    for name, t, h in abstraction_rows(args.target):
        for metric in ("instructions", "registers"):
            print(f"{name:<30} {metric:<13} {t[metric]:>9} {h[metric]:>9} {t[metric] / h[metric]:>7.3f}")
    print(f"\nBytes per weight, GEMV M=1 on {args.target} (static ld.global x threads / weights per K iteration)")
    print("(issued: every ld.global; w+scale: issued less x's ideal share, so x and scale loads that several threads")
    print(" issue at once count here; weights: the 32-bit loads alone, the packed words, against bits / 8)")
    print(" (BN x BK: each width's default GEMV tile; hand4: the hand W4 GEMV at int4's tile)")
    print(f"{'bits':>5} {'BNxBK':>7} {'issued':>8} {'x share':>8} {'w+scale':>8} {'ideal':>7} {'ratio':>6} "
          f"{'weights':>8} {'bits/8':>7} {'ratio':>6} {'widest':>7}")
    for bits, cfg, issued, xs, ws, ideal, w_only, widest in bytes_per_weight_rows(args.target):
        b8 = int(bits[-1]) / 8
        print(f"{bits:>5} {cfg:>7} {issued:>8.4f} {xs:>8.4f} {ws:>8.4f} {ideal:>7.4f} {ws / ideal:>6.3f} "
              f"{w_only:>8.4f} {b8:>7.4f} {w_only / b8:>6.3f} {widest if widest is not None else '-':>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
