"""Abstraction cost of the attention forward and the dK/dV backward: tilekit's attention_fwd_kernel and
attention_bwd_dkdv_kernel against hand-written Triton FA2 kernels with the same tiles, masks, GQA loop and
argument layout, both compiled for a GPU target (no GPU needed). Reports PTX instructions, registers, stack
(spill) bytes, shared memory and wgmma count, and tilekit / hand ratios.

    python bench/abstraction/attention.py [--target sm_90] [--head-dim 128] [--kernel fwd|dkdv|both]
    python bench/abstraction/attention.py --check    # CPU: both dK/dV kernels compute the same (interpreter)

GPU timing runs only where a CUDA device is present (``--time``); elsewhere it is skipped and says so: the
ratios are compile-time metrics, not speed.
"""
import argparse
import math
import sys

import torch
import triton
import tilekit as tk
import triton.language as tl

from tilekit.artifact import summarize_ptx
from tilekit.backends import TARGETS
from tilekit.backends.triton.gpu_compile import cubin_resources
from tilekit.ops.attention.op import kernel_example


@triton.jit
def hand_attention_fwd(Q, q_s0, q_s1, q_s2, q_s3, K, k_s0, k_s1, k_s2, k_s3, V, O, L, l_s0, l_s1,
                       B, Hq, Hkv, Sq, Skv, D, scale, left, right,
                       BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, LOAD4D: tl.constexpr = False):
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
    if LOAD4D:  # the form tilekit's Triton lowering emits: a (1, 1, BM, BD) block, reshaped
        r4, d4 = rows[None, None, :, None], d[None, None, None, :]
        q = tl.reshape(tl.load(Q + b * q_s0 + h * q_s1 + r4 * q_s2 + d4 * q_s3, mask=(r4 < Sq) & (d4 < D),
                               other=0.0), [BM, BD])
    else:
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


@triton.jit
def hand_attention_bwd_dkdv(Q, q_s0, q_s1, q_s2, q_s3, K, k_s0, k_s1, k_s2, k_s3, V, DO, L, Delta, l_s0, l_s1,
                            DK, DV, B, Hq, Hkv, Sq, Skv, D, scale, left, right,
                            BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, LOAD4D: tl.constexpr = False):
    """FA2 dK/dV: one program per (key block, batch x key head), a runtime loop over the GQA group's query
    heads and the query blocks that see the key block; DO has Q's strides, V/DK/DV have K's."""
    n0 = tl.program_id(0) * BN
    bhk = tl.program_id(1)
    b = bhk // Hkv
    hk = bhk % Hkv
    group = Hq // Hkv
    diag = Skv - Sq
    lo = tl.maximum(n0 - diag - right, 0) // BM * BM
    hi = tl.minimum(n0 + BN - diag + left, Sq)
    cols = n0 + tl.arange(0, BN)
    d = tl.arange(0, BD)
    kv_mask = (cols[:, None] < Skv) & (d[None, :] < D)
    kv_off = b * k_s0 + hk * k_s1 + cols[:, None] * k_s2 + d[None, :] * k_s3
    k = tl.load(K + kv_off, mask=kv_mask, other=0.0)
    v = tl.load(V + kv_off, mask=kv_mask, other=0.0)
    dk = tl.full([BN, BD], 0.0, tl.float32)  # tl.full, not tl.zeros: a builtin the interpreter also runs
    dv = tl.full([BN, BD], 0.0, tl.float32)
    qk_scale = scale * 1.4426950408889634
    for g in range(0, group):
        h = hk * group + g
        for m0 in range(lo, hi, BM):
            rows = m0 + tl.arange(0, BM)
            q_mask = (rows[:, None] < Sq) & (d[None, :] < D)
            q_off = b * q_s0 + h * q_s1 + rows[:, None] * q_s2 + d[None, :] * q_s3
            if LOAD4D:  # tilekit's form: (1, 1, BM, BD) blocks, reshaped
                r4, d4 = rows[None, None, :, None], d[None, None, None, :]
                off4 = b * q_s0 + h * q_s1 + r4 * q_s2 + d4 * q_s3
                q = tl.reshape(tl.load(Q + off4, mask=(r4 < Sq) & (d4 < D), other=0.0), [BM, BD])
                do = tl.reshape(tl.load(DO + off4, mask=(r4 < Sq) & (d4 < D), other=0.0), [BM, BD])
            else:
                q = tl.load(Q + q_off, mask=q_mask, other=0.0)
                do = tl.load(DO + q_off, mask=q_mask, other=0.0)
            lse = tl.load(L + b * l_s0 + h * l_s1 + rows, mask=rows < Sq, other=0.0)
            delta = tl.load(Delta + b * l_s0 + h * l_s1 + rows, mask=rows < Sq, other=0.0)
            s2 = tl.dot(q, tl.trans(k)) * qk_scale
            visible = ((rows[:, None] < Sq) & (cols[None, :] < Skv) & (cols[None, :] >= rows[:, None] + diag - left)
                       & (cols[None, :] <= rows[:, None] + diag + right))
            lse2 = tl.where(lse == -float("inf"), 0.0, lse * 1.4426950408889634)
            p = tl.where(visible, tl.exp2(s2 - lse2[:, None]), 0.0)
            dv += tl.dot(tl.trans(p.to(DO.dtype.element_ty)), do)
            dp = tl.dot(do, tl.trans(v))
            ds = p * (dp - delta[:, None]) * scale
            dk += tl.dot(tl.trans(ds.to(Q.dtype.element_ty)), q)
    tl.store(DK + kv_off, dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + kv_off, dv.to(DV.dtype.element_ty), mask=kv_mask)


HAND = {"fwd": (hand_attention_fwd, {"Q": "*fp16", "K": "*fp16", "V": "*fp16", "O": "*fp16", "L": "*fp32"}),
        "dkdv": (hand_attention_bwd_dkdv, {"Q": "*fp16", "K": "*fp16", "V": "*fp16", "DO": "*fp16", "L": "*fp32",
                                           "Delta": "*fp32", "DK": "*fp16", "DV": "*fp16"})}

# Which tilekit tensor dimension each integer argument of a hand kernel carries: (tensor, "shape"|"stride", dim).
# The tensors are kernel_example's, by tilekit parameter name; the hand kernels reuse Q's strides for O / dO,
# K's for V / dK / dV and LSE's for Delta. left and right are plain scalars in both (never marked).
HAND_INT_ARGS = {
    "fwd": {"q_s0": ("Q", "stride", 0), "q_s1": ("Q", "stride", 1), "q_s2": ("Q", "stride", 2),
            "q_s3": ("Q", "stride", 3), "k_s0": ("K", "stride", 0), "k_s1": ("K", "stride", 1),
            "k_s2": ("K", "stride", 2), "k_s3": ("K", "stride", 3), "l_s0": ("LSE", "stride", 0),
            "l_s1": ("LSE", "stride", 1), "B": ("Q", "shape", 0), "Hq": ("Q", "shape", 1), "Hkv": ("K", "shape", 1),
            "Sq": ("Q", "shape", 2), "Skv": ("K", "shape", 2), "D": ("Q", "shape", 3)},
}
HAND_INT_ARGS["dkdv"] = dict(HAND_INT_ARGS["fwd"])
TILEKIT_PARAMS = {"fwd": ("Q", "K", "V", "O", "LSE"), "dkdv": ("Q", "K", "V", "DO", "LSE", "Delta", "DK", "DV")}


def tilekit_specialization(tensors):
    """What tilekit's AOT compile assumes of these example tensors (backends/triton/gpu_compile.py): every
    pointer 16-aligned, the innermost stride the constant 1, and each other shape or stride that is a
    multiple of 16 marked ``tt.divisibility=16``. Returns ({(tensor, kind, dim)} divisible, {(tensor, dim)}
    constant-1 strides)."""
    divisible, unit = set(), set()
    for name, t in tensors.items():
        divisible.update((name, "shape", d) for d, n in enumerate(t.shape) if n % 16 == 0)
        divisible.update((name, "stride", d) for d, n in enumerate(t.stride()[:-1]) if n % 16 == 0)
        unit.add((name, t.dim() - 1))
    return divisible, unit


def hand_signature(kernel, tensors):
    """Triton signature, constexprs and attributes of a hand kernel under tilekit's specialization of the same
    example tensors: the same argument gets the same divisibility (or constant-1) in both compiles."""
    hand, ptrs = HAND[kernel]
    divisible, unit = tilekit_specialization(tensors)
    sig, consts, attrs = {}, {}, {}
    for i, name in enumerate(hand.arg_names):
        if name in ptrs:
            sig[name] = ptrs[name]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in ("BM", "BN", "BD", "LOAD4D"):
            sig[name] = "constexpr"
        elif name == "scale":
            sig[name] = "fp32"
        elif (entry := HAND_INT_ARGS[kernel].get(name)) and entry[1] == "stride" and (entry[0], entry[2]) in unit:
            sig[name], consts[name] = "constexpr", 1
        else:
            sig[name] = "i32"
            if HAND_INT_ARGS[kernel].get(name) in divisible:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, consts, attrs


def compile_hand(target, D, config, kernel="fwd", tensors=None, specialize=True, load4d=False):
    """The hand kernel at ``config``'s tiles. ``specialize``: the integer arguments get tilekit's
    specialization of ``tensors`` (a like-with-like compile); without it only the pointers are marked.
    ``load4d``: its Q (dK/dV: Q and dO) tiles loaded the way tilekit's lowering does (4-D block + reshape)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    _, backend, arch, warp = TARGETS[target]
    hand, ptrs = HAND[kernel]
    if specialize:
        sig, consts, attrs = hand_signature(kernel, tensors)
    else:
        sig, consts, attrs = {}, {}, {}
        for i, name in enumerate(hand.arg_names):
            sig[name] = (ptrs[name] if name in ptrs else "constexpr" if name in ("BM", "BN", "BD", "LOAD4D")
                         else "fp32" if name == "scale" else "i32")
            if name in ptrs:
                attrs[(i,)] = [["tt.divisibility", 16]]
    consts.update({"BM": config["BM"], "BN": config["BN"], "BD": config["BD"], "LOAD4D": load4d})
    c = triton.compile(ASTSource(hand, sig, consts, attrs), target=GPUTarget(backend, arch, warp),
                       options={"num_warps": config["num_warps"], "num_stages": config["num_stages"],
                                "enable_fp_fusion": True})
    summary = summarize_ptx(c.asm["ptx"])
    res = cubin_resources(c.asm["cubin"])
    return {"instructions": summary["ptx_instructions"], "registers": res["registers"],
            "stack_bytes": res["stack_bytes"], "shared_bytes": c.metadata.shared, "wgmma": summary.get("wgmma", 0),
            "mma.sync": summary.get("mma.sync", 0), "ptx": c.asm["ptx"]}


def compile_tilekit(target, D, kernel="fwd"):
    """tilekit's kernel at its target default (Llama-3-8B GQA, fp16, causal): (launch kwargs, metrics, the
    example tensors by tilekit parameter name, for the hand kernel's matching specialization)."""
    tk_kernel, args, kwargs = kernel_example((1, 32, 8, 4096, 4096, D), torch.float16, "cuda", kernel, target=target)
    art = tk_kernel.compile(target, *args, **kwargs)
    tensors = dict(zip(TILEKIT_PARAMS[kernel], args))
    return kwargs, {"instructions": art.instructions["ptx_instructions"], "registers": art.resources["registers"],
                    "stack_bytes": art.resources["stack_bytes"], "shared_bytes": art.resources["shared_bytes"],
                    "wgmma": art.instructions["wgmma"], "mma.sync": art.instructions["mma.sync"],
                    "ptx": art.assembly}, tensors


def check_dkdv_on_interpreter(shape=(1, 4, 2, 37, 45, 16), BM=16, BN=16, causal=True):
    """CPU proof that the two dK/dV kernels compute the same: both under Triton's interpreter at a tiny ragged
    GQA shape, fp32, and both against float64 autograd. Returns (max |tilekit - hand|, max error vs float64)."""
    import tilekit.ops as tk_ops
    from triton.runtime.interpreter import InterpretedFunction
    from tilekit.ops.attention.kernels import attention_bwd_dkdv_kernel
    from tilekit.ops.attention.op import attention_reference, window_bounds
    B, Hq, Hkv, Sq, Skv, D = shape
    gen = torch.Generator().manual_seed(0)
    q, do = (torch.randn(B, Hq, Sq, D, generator=gen) for _ in range(2))
    k, v = (torch.randn(B, Hkv, Skv, D, generator=gen) for _ in range(2))
    wide = [t.double().requires_grad_() for t in (q, k, v)]
    o, lse = attention_reference(*wide, causal=causal, return_lse=True)
    want = torch.autograd.grad(o, wide, do.double())
    lse, delta = lse.detach().float(), (o.detach() * do.double()).sum(-1).float()
    left, right = window_bounds(causal, None, Sq, Skv)
    scale = 1 / math.sqrt(D)
    grid = (-(-Skv // BN), B * Hkv)
    dk_tk, dv_tk, dk_hand, dv_hand = (torch.zeros_like(k) for _ in range(4))
    with tk_ops.use_backend("triton"):
        attention_bwd_dkdv_kernel[grid](q, k, v, do, lse, delta, dk_tk, dv_tk, scale, 1.0, left, right, SOFTCAP=False,
                                        BM=BM, BN=BN, BD=max(16, D), ACC=tk.float32, backend="triton")
    InterpretedFunction(hand_attention_bwd_dkdv.fn)[grid](
        q, *q.stride(), k, *k.stride(), v, do, lse, delta, *lse.stride()[:2], dk_hand, dv_hand, B, Hq, Hkv, Sq, Skv, D,
        scale, left, right, BM=BM, BN=BN, BD=max(16, D))
    same = max((dk_tk - dk_hand).abs().max().item(), (dv_tk - dv_hand).abs().max().item())
    vs64 = max((dk_tk.double() - want[1]).abs().max().item(), (dv_tk.double() - want[2]).abs().max().item())
    return same, vs64


def _time_on_gpu(target, D, kernel):
    """Median ms of both kernels on the local GPU, or the reason timing is skipped."""
    if not torch.cuda.is_available():
        return "GPU timing skipped: no CUDA device here (torch.cuda.is_available() is False); the ratios above " \
               "are compile-time metrics of the real compile, not speed"
    return "GPU timing not implemented in this bench: use scripts/device_check.d/attention.sh on a lent GPU"


def aot_table(targets=("sm_80", "sm_90", "gfx90a", "gfx942"),
              kernels=("fwd", "dkdv", "dq", "varlen_fwd", "varlen_dkdv", "varlen_dq", "decode", "combine"),
              dims=(64, 128)):
    """Every kernel at its per-target default config (Llama-3-8B GQA, fp16, causal; varlen: 8 packed sequences
    of 4096): registers (VGPRs on AMD, with the AGPR and spill split), spills, NVIDIA stack bytes, shared
    memory, matrix instructions."""
    from tilekit.ops.attention.op import varlen_kernel_example
    import re
    import time
    for target in targets:
        for D in dims:
            for kernel in kernels:
                t0 = time.time()
                if kernel.startswith("varlen_"):
                    tk_kernel, args, kw = varlen_kernel_example((8, 32, 8, 4096, 4096, D), torch.float16, "cuda",
                                                                kernel[7:], target=target)
                elif kernel in ("decode", "combine"):
                    tk_kernel, args, kw = decode_example(D, kernel)
                else:
                    tk_kernel, args, kw = kernel_example((1, 32, 8, 4096, 4096, D), torch.float16, "cuda", kernel,
                                                         target=target)
                art = tk_kernel.compile(target, *args, **kw)
                r, i = art.resources, art.instructions
                if target.startswith("sm_"):
                    regs = f"regs={r['registers']} spills={r['spills']} stack={r['stack_bytes']}"
                    mma = f"wgmma={i['wgmma']} mma.sync={i['mma.sync']}"
                else:
                    meta = {k: int(m.group(1)) if (m := re.search(rf"\.{k}:\s+(\d+)", art.assembly)) else None
                            for k in ("agpr_count", "vgpr_spill_count", "sgpr_spill_count")}
                    regs = (f"vgprs={r['vgprs']} (agprs {meta['agpr_count']}) spills={r['spills']} "
                            f"(vgpr {meta['vgpr_spill_count']}, sgpr {meta['sgpr_spill_count']})")
                    mma = f"mfma={i['mfma']}"
                tiles = (f"BM={kw['BM']:<3} BN={kw['BN']:<3}" if "BM" in kw else
                         f"GP={kw['GP']} PAGE={kw['PAGE']}" if "GP" in kw else f"SP={kw['SP']}")
                print(f"{target:<7} D={D:>3} {kernel:<11} {tiles} warps={kw['num_warps']} "
                      f"stages={kw.get('num_stages', 1)} {regs} smem={r['shared_bytes']} {mma} "
                      f"({time.time() - t0:.1f}s)", flush=True)


def decode_example(D, kernel, B=16, Hq=32, Hkv=8, context=4096, page=16, splits=4):
    """The paged decode (Llama-3-8B, batch 16, 4k context, 16-token pages) or its combine, meta tensors, at
    ``splits`` splits and the default 4 warps."""
    from tilekit.ops.attention import decode
    pages = context // page
    meta = dict(dtype=torch.float16, device="meta")
    q = torch.empty(B, Hq, D, **meta)
    k_cache = torch.empty(B * pages, page, Hkv, D, **meta)
    table = torch.empty(B, pages, dtype=torch.int32, device="meta")
    lens = torch.empty(B, dtype=torch.int32, device="meta")
    o_part = torch.empty(B, Hq, splits, D, dtype=torch.float32, device="meta")
    l_part = torch.empty(B, Hq, splits, dtype=torch.float32, device="meta")
    config = {"num_splits": splits, "num_warps": 4, "num_stages": 1}
    if kernel == "decode":
        _, args, kw = decode.decode_launch_args(q, k_cache, k_cache, table, lens, o_part, l_part, config,
                                                1 / math.sqrt(D), None, 1 << 30)
        return decode.attention_decode_kernel, args, kw
    o, lse = torch.empty(B, Hq, D, **meta), torch.empty(B, Hq, dtype=torch.float32, device="meta")
    _, args, kw = decode.combine_launch_args(o_part, l_part, o, lse, config)
    return decode.attention_combine_kernel, args, kw


METRICS = ("instructions", "registers", "stack_bytes", "shared_bytes", "wgmma", "mma.sync")


def ratios(ours, hand):
    return {m: ours[m] / hand[m] if hand[m] else (1.0 if ours[m] == hand[m] else math.inf) for m in METRICS}


def compare(target, D, kernel, specialize=True, load4d=False):
    """Print and return {metric: tilekit / hand}; ``specialize=False`` gives the old pointer-only hand compile,
    ``load4d`` the hand kernel with tilekit's 4-D block loads (what is left is the rest of the lowering)."""
    config, ours, tensors = compile_tilekit(target, D, kernel)
    hand = compile_hand(target, D, config, kernel, tensors, specialize=specialize, load4d=load4d)
    form = ("with tilekit's shape/stride specialization" if specialize else "pointers only") + \
        (", 4-D block loads + reshape" if load4d else "")
    print(f"attention {kernel} on {target}, D={D}, BM={config['BM']} BN={config['BN']} "
          f"warps={config['num_warps']} stages={config['num_stages']} (tilekit / hand-written Triton, hand {form})")
    r = ratios(ours, hand)
    for metric in METRICS:
        print(f"{metric:<13} {ours[metric]!s:>9} {hand[metric]!s:>9} {r[metric]:>7.3f}")
    worst = max(r[m] for m in ("instructions", "registers", "shared_bytes"))
    print(f"worst ratio {worst:.3f} (goal <= 1.05): {'met' if worst <= 1.05 else 'NOT met'}")
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="sm_90", choices=[t for t in sorted(TARGETS) if t.startswith("sm_")])
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--kernel", choices=["fwd", "dkdv", "both"], default="both")
    ap.add_argument("--check", action="store_true", help="CPU: dK/dV tilekit vs hand-written on the interpreter")
    ap.add_argument("--pointers-only", action="store_true",
                    help="compile the hand kernels with only their pointers marked (the old, unfair comparison)")
    ap.add_argument("--load4d", action="store_true",
                    help="the hand kernels load Q (dK/dV: Q, dO) as tilekit's lowering does: a 4-D block + reshape")
    ap.add_argument("--dims", default="64,128",
                    help="--aot-table head dims (other than 64,128: the dense and varlen kernels only), e.g. 256,96")
    ap.add_argument("--time", action="store_true", help="time both on a local GPU (skipped without one)")
    ap.add_argument("--aot-table", action="store_true",
                    help="every kernel x sm_80/sm_90/gfx90a/gfx942 x D=64/128 at the per-target defaults")
    args = ap.parse_args(argv)
    if args.aot_table:
        dims = tuple(int(d) for d in args.dims.split(","))
        aot_table(dims=dims) if dims == (64, 128) else aot_table(
            kernels=("fwd", "dkdv", "dq", "varlen_fwd", "varlen_dkdv", "varlen_dq"), dims=dims)
        return 0
    if args.check:
        same, vs64 = check_dkdv_on_interpreter()
        print(f"dK/dV on the Triton interpreter (1,4,2,37,45,16 causal, fp32): max |tilekit - hand| = {same:.3g}, "
              f"max error vs float64 autograd = {vs64:.3g}")
        return 0 if same <= 1e-4 and vs64 <= 1e-3 else 1
    for kernel in (("fwd", "dkdv") if args.kernel == "both" else (args.kernel,)):
        compare(args.target, args.head_dim, kernel, specialize=not args.pointers_only, load4d=args.load4d)
        if args.time:
            print(_time_on_gpu(args.target, args.head_dim, kernel))
    return 0


if __name__ == "__main__":
    sys.exit(main())
