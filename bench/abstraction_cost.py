"""Abstraction cost: tilekit kernels vs hand-written Triton with the same tile config, compiled for a
GPU target side by side in one run. Reports PTX instructions, registers and shared memory, and the
ratio tilekit / hand-written (goal: within 1.05).

    python -m tilekit.bench.abstraction_cost [--target sm_90] [--size 4096]
"""
from __future__ import annotations

import argparse
import sys

import torch
import triton
import triton.language as tl

import tilekit as tk
from tilekit import examples
from tilekit.backends.triton.gpu_compile import cubin_resources
from tilekit.artifact import summarize_amdgcn, summarize_ptx, amdgcn_resources
from tilekit.backends import TARGETS


# ---- the tilekit kernels (the DESIGN.md examples) ----------------------------------------------

tk_matmul = examples.matmul  # the DESIGN.md contract kernel, unchanged


@tk.kernel
def tk_softmax(X, Y, BLOCK: tk.constexpr = 1024):
    row = tk.program_id(0)
    x = tk.load(X, (row, 0), (1, BLOCK), other=-float("inf"))
    x = x.to(tk.float32)
    x = x - tk.max(x, axis=1)[:, None]
    e = tk.exp(x)
    tk.store(Y, (row, 0), (e / tk.sum(e, axis=1)[:, None]).to(Y.dtype))


# ---- hand-written Triton, same tiles, same masking rules, same argument conventions -----------------

@triton.jit
def hand_matmul(A, A_s0, A_s1, A_st0, A_st1: tl.constexpr, B, B_s0, B_s1, B_st0, B_st1: tl.constexpr,
                C, C_s0, C_s1, C_st0, C_st1: tl.constexpr,
                BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pm = tl.program_id(0)
    pn = tl.program_id(1)
    rm = pm * BM + tl.arange(0, BM)
    rn = pn * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), tl.float32)
    for k in range(0, A_s1, BK):
        a = tl.load(A + rm[:, None] * A_st0 + (k + rk)[None, :] * A_st1,
                    mask=(rm[:, None] < A_s0) & ((k + rk)[None, :] < A_s1), other=0.0)
        b = tl.load(B + (k + rk)[:, None] * B_st0 + rn[None, :] * B_st1,
                    mask=((k + rk)[:, None] < B_s0) & (rn[None, :] < B_s1), other=0.0)
        acc = tl.dot(a, b, acc)
    tl.store(C + rm[:, None] * C_st0 + rn[None, :] * C_st1, acc.to(C.dtype.element_ty),
             mask=(rm[:, None] < C_s0) & (rn[None, :] < C_s1))


@triton.jit
def hand_softmax(X, X_s0, X_s1, X_st0, X_st1: tl.constexpr, Y, Y_s0, Y_s1, Y_st0, Y_st1: tl.constexpr,
                 BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    x = tl.load(X + row * X_st0 + cols * X_st1, mask=(cols < X_s1) & (row < X_s0), other=-float("inf"))
    x = x.to(tl.float32)
    x = x - tl.max(x, axis=0)
    e = tl.exp(x)
    y = e / tl.sum(e, axis=0)
    tl.store(Y + row * Y_st0 + cols * Y_st1, y.to(Y.dtype.element_ty), mask=(cols < Y_s1) & (row < Y_s0))


def compile_hand(fn, tensors, constexprs, target):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    _, backend, arch, warp = TARGETS[target]
    ptr = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32"}
    sig, consts, attrs, i = {}, dict(constexprs), {}, 0
    names = fn.arg_names
    for t in tensors:
        for j, suffix in enumerate(["", "_s0", "_s1", "_st0", "_st1"]):
            name = names[i]
            if j == 0:
                sig[name] = ptr[t.dtype]
                attrs[(i,)] = [["tt.divisibility", 16]]
            elif j == 4:
                sig[name] = "constexpr"
                consts[name] = 1
            else:
                sig[name] = "i32"
                attrs[(i,)] = [["tt.divisibility", 16]]
            i += 1
    for k in constexprs:
        sig[k] = "constexpr"
    c = triton.compile(ASTSource(fn, sig, consts, attrs), target=GPUTarget(backend, arch, warp),
                       options={"enable_fp_fusion": True})
    if backend == "cuda":
        res = cubin_resources(c.asm["cubin"])
        summ = summarize_ptx(c.asm["ptx"])
        count = summ["ptx_instructions"]
    else:
        res = amdgcn_resources(c.asm["amdgcn"])
        summ = summarize_amdgcn(c.asm["amdgcn"])
        count = summ["amdgcn_instructions"]
    return {"instructions": count, "registers": res.get("registers", res.get("vgprs")),
            "shared_bytes": c.metadata.shared}


def compile_tilekit(kernel, tensors, constexprs, target):
    art = kernel.compile(target, *tensors, **constexprs)
    count = art.instructions.get("ptx_instructions", art.instructions.get("amdgcn_instructions"))
    return {"instructions": count, "registers": art.resources.get("registers", art.resources.get("vgprs")),
            "shared_bytes": art.resources["shared_bytes"]}


def measure(target="sm_90", size=4096, dtype=torch.float16):
    A = torch.empty(size, size, dtype=dtype, device="meta")
    cases = [
        ("matmul 64x64x32", tk_matmul, hand_matmul, (A, A, A), {"BM": 64, "BN": 64, "BK": 32}),
        ("matmul 128x128x64", tk_matmul, hand_matmul, (A, A, A), {"BM": 128, "BN": 128, "BK": 64}),
        ("softmax 1024", tk_softmax, hand_softmax, (A, A), {"BLOCK": 1024}),
    ]
    rows = []
    for name, tkk, hand, tensors, cx in cases:
        t = compile_tilekit(tkk, tensors, cx, target)
        h = compile_hand(hand, tensors, cx, target)
        rows.append((name, t, h))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="sm_90", choices=sorted(TARGETS))
    ap.add_argument("--size", type=int, default=4096)
    args = ap.parse_args(argv)
    rows = measure(args.target, args.size)
    print(f"Abstraction cost on {args.target} (fp16, {args.size}x{args.size}; tilekit / hand-written Triton)")
    print(f"{'kernel':<20} {'metric':<13} {'tilekit':>9} {'hand':>9} {'ratio':>7}")
    worst = 0.0
    for name, t, h in rows:
        for metric in ("instructions", "registers", "shared_bytes"):
            a, b = t[metric], h[metric]
            ratio = (a / b) if b else (1.0 if a == b else float("inf"))
            worst = max(worst, ratio)
            print(f"{name:<20} {metric:<13} {a!s:>9} {b!s:>9} {ratio:>7.3f}")
    print(f"worst ratio {worst:.3f} (goal <= 1.05): {'met' if worst <= 1.05 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
