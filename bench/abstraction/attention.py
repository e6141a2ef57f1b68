"""Abstraction cost of the attention forward: tilekit's attention_fwd_kernel against a hand-written Triton
FA2 forward with the same tiles, masks and argument layout, both compiled for a GPU target (no GPU needed).
Reports PTX instructions, registers, shared memory and wgmma count, and tilekit / hand ratios.

    python bench/abstraction/attention.py [--target sm_90] [--head-dim 128]
"""
import argparse
import math
import sys

import torch
import triton
import triton.language as tl

from tilekit.artifact import summarize_ptx
from tilekit.backends import TARGETS
from tilekit.backends.triton.gpu_compile import cubin_resources
from tilekit.ops.attention.op import kernel_example


@triton.jit
def hand_attention_fwd(Q, q_s0, q_s1, q_s2, q_s3, K, k_s0, k_s1, k_s2, k_s3, V, O, L, l_s0, l_s1,
                       B, Hq, Hkv, Sq, Skv, D, scale, left, right,
                       BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr):
    m0 = tl.program_id(0) * BM
    bh = tl.program_id(1)
    b = bh // Hq
    h = bh % Hq
    hk = h // (Hq // Hkv)
    diag = Skv - Sq
    lo = tl.maximum(m0 + diag - left, 0) // BN * BN
    hi = tl.minimum(m0 + BM + diag + right, Skv)
    rows = m0 + tl.arange(0, BM)
    d = tl.arange(0, BD)
    q = tl.load(Q + b * q_s0 + h * q_s1 + rows[:, None] * q_s2 + d[None, :] * q_s3,
                mask=(rows[:, None] < Sq) & (d[None, :] < D), other=0.0)
    m_i = tl.full([BM], -float("inf"), tl.float32)
    l_i = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, BD], tl.float32)
    qk_scale = scale * 1.4426950408889634
    for n0 in range(lo, hi, BN):
        cols = n0 + tl.arange(0, BN)
        kv_mask = (cols[:, None] < Skv) & (d[None, :] < D)
        kv_off = b * k_s0 + hk * k_s1 + cols[:, None] * k_s2 + d[None, :] * k_s3
        k = tl.load(K + kv_off, mask=kv_mask, other=0.0)
        v = tl.load(V + kv_off, mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k)) * qk_scale
        visible = ((rows[:, None] < Sq) & (cols[None, :] < Skv) & (cols[None, :] >= rows[:, None] + diag - left)
                   & (cols[None, :] <= rows[:, None] + diag + right))
        s = tl.where(visible, s, -float("inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(V.dtype.element_ty), v)
        m_i = m_new
    empty = l_i == 0.0
    o = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, -float("inf"), m_i * 0.6931471805599453 + tl.log(tl.where(empty, 1.0, l_i)))
    tl.store(O + b * q_s0 + h * q_s1 + rows[:, None] * q_s2 + d[None, :] * q_s3, o.to(O.dtype.element_ty),
             mask=(rows[:, None] < Sq) & (d[None, :] < D))
    tl.store(L + b * l_s0 + h * l_s1 + rows, lse, mask=rows < Sq)


def compile_hand(target, D, config):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    _, backend, arch, warp = TARGETS[target]
    names = hand_attention_fwd.arg_names
    ptrs = {"Q": "*fp16", "K": "*fp16", "V": "*fp16", "O": "*fp16", "L": "*fp32"}
    sig, attrs = {}, {}
    for i, name in enumerate(names):
        if name in ptrs:
            sig[name] = ptrs[name]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in ("BM", "BN", "BD"):
            sig[name] = "constexpr"
        elif name == "scale":
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    consts = {"BM": config["BM"], "BN": config["BN"], "BD": config["BD"]}
    c = triton.compile(ASTSource(hand_attention_fwd, sig, consts, attrs), target=GPUTarget(backend, arch, warp),
                       options={"num_warps": config["num_warps"], "num_stages": config["num_stages"]})
    summary = summarize_ptx(c.asm["ptx"])
    return {"instructions": summary["ptx_instructions"], "registers": cubin_resources(c.asm["cubin"])["registers"],
            "shared_bytes": c.metadata.shared, "wgmma": summary.get("wgmma", 0)}


def compile_tilekit(target, D):
    kernel, args, kwargs = kernel_example((1, 32, 8, 4096, 4096, D), torch.float16, "cuda", "fwd")
    art = kernel.compile(target, *args, **kwargs)
    return kwargs, {"instructions": art.instructions["ptx_instructions"], "registers": art.resources["registers"],
                    "shared_bytes": art.resources["shared_bytes"], "wgmma": art.instructions["wgmma"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="sm_90", choices=[t for t in sorted(TARGETS) if t.startswith("sm_")])
    ap.add_argument("--head-dim", type=int, default=128)
    args = ap.parse_args(argv)
    config, ours = compile_tilekit(args.target, args.head_dim)
    hand = compile_hand(args.target, args.head_dim, config)
    print(f"attention forward on {args.target}, D={args.head_dim}, BM={config['BM']} BN={config['BN']} "
          f"warps={config['num_warps']} stages={config['num_stages']} (tilekit / hand-written Triton)")
    worst = 0.0
    for metric in ("instructions", "registers", "shared_bytes", "wgmma"):
        a, b = ours[metric], hand[metric]
        ratio = a / b if b else (1.0 if a == b else math.inf)
        if metric != "wgmma":
            worst = max(worst, ratio)
        print(f"{metric:<13} {a!s:>9} {b!s:>9} {ratio:>7.3f}")
    print(f"worst ratio {worst:.3f} (goal <= 1.05): {'met' if worst <= 1.05 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
