"""Abstraction cost of the SSD chunk scan: tilekit's ssd_scan_fwd_kernel against a hand-written Triton kernel
with the same tiles and loop structure (one program per (batch, head, BP head dims); chunks of Q steps walked in
(S, S) sub-chunk blocks; fp16 matmul operands, fp32 accumulation; dt_bias + softplus, D per head, z gating).

Two parts:
  * GPU code, compiled ahead of time for --target (no GPU needed): PTX instructions, registers, shared memory and
    wgmma / mma.sync counts, and tilekit / hand ratios at Mamba-2-2.7B prefill (L=2048, H=80, P=64, N=128,
    chunk 256). GPU *timing* is skipped here: no machine of this project has a GPU (the goal, within 1.05 on
    sm_90, needs scripts/device_check.d/ssm.sh on one).
  * CPU proof that both kernels compute the same thing: both run under the Triton interpreter at a tiny ragged
    shape (two sub-chunks per chunk, a ragged last chunk) and are compared with each other and with a float64
    sequential recurrence.

    python bench/abstraction/ssm.py [--target sm_90] [--skip-compile] [--skip-interpreter]
"""
import argparse
import math
import sys

import torch
import triton
import triton.language as tl

MAMBA_2_2_7B = (1, 2048, 80, 64, 128, 256)


def hand_ssd_chunk_scan(X, x_s0, x_s1, x_s2, Dt, dt_s0, dt_s1, A, Bm, b_s0, b_s1, b_s2, Cm, Dskip, DtBias, Z, Y,
                        Final, f_s0, f_s1, f_s2, length, hdim, nstate, heads_per_group,
                        Q: tl.constexpr, S: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr):
    """y = SSD(x, softplus(dt + dt_bias), A, B, C) + D x, gated by silu(z); Final = the last state. X, Z, Y share
    strides (x_s*), as do B and C (b_s*); the innermost stride of every tensor is 1. Written with Triton's
    core builtins only (tl.full, tl.reduce / tl.associative_scan with _sum_combine rather than tl.zeros, tl.sum,
    tl.cumsum, tl.sigmoid, which are themselves @triton.jit helpers that the interpreter cannot call unless
    TRITON_INTERPRET is set at import)."""
    b = tl.program_id(0)
    h = tl.program_id(1)
    p0 = tl.program_id(2) * BP
    g = h // heads_per_group
    a_h = tl.load(A + h)
    bias = tl.load(DtBias + h)
    skip = tl.load(Dskip + h)
    p = p0 + tl.arange(0, BP)
    n = tl.arange(0, BN)
    sub = tl.arange(0, S)
    step = tl.arange(0, Q)
    p_ok = p < hdim
    n_ok = n < nstate
    state = tl.full([BP, BN], 0.0, tl.float32)
    for t0 in range(0, length, Q):
        rows = t0 + step
        raw = tl.load(Dt + b * dt_s0 + rows * dt_s1 + h, mask=rows < length, other=0.0).to(tl.float32) + bias
        dt_q = tl.where(rows < length, tl.where(raw > 20.0, raw, tl.log(1.0 + tl.exp(tl.minimum(raw, 20.0)))), 0.0)
        a_full = dt_q * a_h
        total = tl.reduce(a_full, 0, tl.standard._sum_combine)
        state_in = state.to(X.dtype.element_ty)
        state = state * tl.exp(total)
        for i0 in range(0, Q, S):
            ri = t0 + i0 + sub
            vi = ri < length
            raw_i = tl.load(Dt + b * dt_s0 + ri * dt_s1 + h, mask=vi, other=0.0).to(tl.float32) + bias
            dt_i = tl.where(vi, tl.where(raw_i > 20.0, raw_i, tl.log(1.0 + tl.exp(tl.minimum(raw_i, 20.0)))), 0.0)
            cum_i = tl.reduce(tl.where(step < i0, a_full, 0.0), 0, tl.standard._sum_combine) + \
                tl.associative_scan(dt_i * a_h, 0, tl.standard._sum_combine)
            bc_off_i = b * b_s0 + ri[:, None] * b_s1 + g * b_s2 + n[None, :]
            c_i = tl.load(Cm + bc_off_i, mask=vi[:, None] & n_ok[None, :], other=0.0)
            x_off_i = b * x_s0 + ri[:, None] * x_s1 + h * x_s2 + p[None, :]
            x_i = tl.load(X + x_off_i, mask=vi[:, None] & p_ok[None, :], other=0.0)
            y = tl.exp(cum_i)[:, None] * tl.dot(c_i, tl.trans(state_in))
            for j0 in range(0, i0 + S, S):
                rj = t0 + j0 + sub
                vj = rj < length
                raw_j = tl.load(Dt + b * dt_s0 + rj * dt_s1 + h, mask=vj, other=0.0).to(tl.float32) + bias
                dt_j = tl.where(vj, tl.where(raw_j > 20.0, raw_j, tl.log(1.0 + tl.exp(tl.minimum(raw_j, 20.0)))),
                                0.0)
                cum_j = tl.reduce(tl.where(step < j0, a_full, 0.0), 0, tl.standard._sum_combine) + \
                    tl.associative_scan(dt_j * a_h, 0, tl.standard._sum_combine)
                b_j = tl.load(Bm + b * b_s0 + rj[:, None] * b_s1 + g * b_s2 + n[None, :],
                              mask=vj[:, None] & n_ok[None, :], other=0.0)
                x_j = tl.load(X + b * x_s0 + rj[:, None] * x_s1 + h * x_s2 + p[None, :],
                              mask=vj[:, None] & p_ok[None, :], other=0.0)
                keep = (i0 + sub)[:, None] >= (j0 + sub)[None, :]
                decay = tl.exp(tl.where(keep, cum_i[:, None] - cum_j[None, :], -float("inf")))
                w = tl.dot(c_i, tl.trans(b_j)) * decay * dt_j[None, :]
                y = tl.dot(w.to(X.dtype.element_ty), x_j, y)
            b_i = tl.load(Bm + bc_off_i, mask=vi[:, None] & n_ok[None, :], other=0.0)
            xw = x_i.to(tl.float32) * (dt_i * tl.exp(total - cum_i))[:, None]
            state = tl.dot(tl.trans(xw.to(X.dtype.element_ty)), b_i, state)
            z = tl.load(Z + x_off_i, mask=vi[:, None] & p_ok[None, :], other=0.0).to(tl.float32)
            y = (y + x_i.to(tl.float32) * skip) * (z / (1.0 + tl.exp(-z)))
            tl.store(Y + x_off_i, y.to(Y.dtype.element_ty), mask=vi[:, None] & p_ok[None, :])
    tl.store(Final + b * f_s0 + h * f_s1 + p[:, None] * f_s2 + n[None, :], state,
             mask=p_ok[:, None] & n_ok[None, :])


POINTERS = {"X": "*fp16", "Dt": "*fp16", "A": "*fp32", "Bm": "*fp16", "Cm": "*fp16", "Dskip": "*fp32",
            "DtBias": "*fp32", "Z": "*fp16", "Y": "*fp16", "Final": "*fp32"}
CONSTEXPRS = ("Q", "S", "BP", "BN")


def tilekit_example(shape=MAMBA_2_2_7B):
    from tilekit.ops.ssm import ssd
    return ssd.kernel_example(shape, torch.float16, torch.device("cuda"))


def compile_hand(target, kwargs):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from tilekit.artifact import summarize_ptx
    from tilekit.backends import TARGETS
    from tilekit.backends.triton.gpu_compile import cubin_resources
    _, backend, arch, warp = TARGETS[target]
    fn = triton.jit(hand_ssd_chunk_scan)
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in POINTERS:
            sig[name] = POINTERS[name]
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "constexpr" if name in CONSTEXPRS else "i32"
    consts = {name: kwargs[name] for name in CONSTEXPRS}
    c = triton.compile(ASTSource(fn, sig, consts, attrs), target=GPUTarget(backend, arch, warp),
                       options={"num_warps": kwargs["num_warps"], "num_stages": kwargs["num_stages"]})
    summary = summarize_ptx(c.asm["ptx"])
    return {"instructions": summary["ptx_instructions"], "registers": cubin_resources(c.asm["cubin"])["registers"],
            "shared_bytes": c.metadata.shared, "wgmma": summary.get("wgmma", 0),
            "mma.sync": summary.get("mma.sync", 0)}


def compile_tilekit(target):
    kernel, args, kwargs = tilekit_example()
    art = kernel.compile(target, *args, **kwargs)
    return kwargs, {"instructions": art.instructions["ptx_instructions"], "registers": art.resources["registers"],
                    "shared_bytes": art.resources["shared_bytes"], "wgmma": art.instructions.get("wgmma", 0),
                    "mma.sync": art.instructions.get("mma.sync", 0)}


def compare_compiled(target):
    kwargs, ours = compile_tilekit(target)
    hand = compile_hand(target, kwargs)
    print(f"ssd_scan forward on {target} at (Bt, L, H, P, N, chunk) = {MAMBA_2_2_7B}: Q={kwargs['Q']} S={kwargs['S']} "
          f"BP={kwargs['BP']} BN={kwargs['BN']} warps={kwargs['num_warps']} (tilekit / hand-written Triton)")
    worst = 0.0
    for metric in ("instructions", "registers", "shared_bytes", "wgmma", "mma.sync"):
        a, b = ours[metric], hand[metric]
        ratio = a / b if b else (1.0 if a == b else math.inf)
        if metric in ("instructions", "registers", "shared_bytes"):
            worst = max(worst, ratio)
        print(f"{metric:<13} {a!s:>9} {b!s:>9} {ratio:>7.3f}")
    print(f"worst static ratio {worst:.3f} (goal <= 1.05): {'met' if worst <= 1.05 else 'NOT met'}")
    print("GPU timing: skipped, no GPU on this machine (run scripts/device_check.d/ssm.sh on one)")
    return worst


def tiny_problem(seed=0, bt=1, length=40, heads=2, hdim=16, n=16):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(bt, length, heads, hdim, generator=gen).half()
    dt = (torch.rand(bt, length, heads, generator=gen) - 1.5).half()
    A = -(torch.rand(heads, generator=gen) * 2 + 0.3)
    B = torch.randn(bt, length, 1, n, generator=gen).half()
    C = torch.randn(bt, length, 1, n, generator=gen).half()
    D = torch.randn(heads, generator=gen)
    dt_bias = torch.randn(heads, generator=gen) * 0.3
    z = torch.randn(bt, length, heads, hdim, generator=gen).half()
    return x, dt, A, B, C, D, dt_bias, z


def sequential(x, dt, A, B, C, D, dt_bias, z):
    f = torch.float64
    dtp = torch.nn.functional.softplus(dt.to(f) + dt_bias.to(f))
    state = torch.zeros(x.shape[0], x.shape[2], x.shape[3], B.shape[3], dtype=f)
    ys = []
    for t in range(x.shape[1]):
        state = torch.exp(dtp[:, t] * A.to(f))[:, :, None, None] * state + \
            (dtp[:, t, :, None] * x[:, t].to(f))[..., None] * B[:, t, 0, None, None, :].to(f)
        ys.append(torch.einsum("bhpn,bn->bhp", state, C[:, t, 0].to(f)))
    y = torch.stack(ys, 1) + x.to(f) * D.to(f)[:, None]
    return y * torch.nn.functional.silu(z.to(f)), state


def run_hand_interpreted(x, dt, A, B, C, D, dt_bias, z, chunk, sub, block_p):
    from triton.runtime.interpreter import InterpretedFunction
    bt, length, heads, hdim = x.shape
    n = B.shape[3]
    y = torch.empty_like(x)
    final = torch.empty(bt, heads, hdim, n)
    InterpretedFunction(hand_ssd_chunk_scan)[(bt, heads, triton.cdiv(hdim, block_p))](
        x, *x.stride()[:3], dt, *dt.stride()[:2], A, B, *B.stride()[:3], C, D, dt_bias, z, y, final,
        *final.stride()[:3], length, hdim, n, heads // B.shape[2], Q=chunk, S=sub, BP=block_p,
        BN=triton.next_power_of_2(n))
    return y, final


def run_tilekit_interpreted(x, dt, A, B, C, D, dt_bias, z, chunk, sub, block_p):
    from tilekit.ops import use_backend
    from tilekit.ops.ssm import ssd
    bt, length, heads, hdim = x.shape
    y = torch.empty_like(x)
    final = torch.empty(bt, heads, hdim, B.shape[3])
    with use_backend("triton"):
        ssd._launch_forward(x, dt, A, B, C, chunk, D, z, dt_bias, None, None, True, 0.0, 3.0e38, y, final, None,
                            config={"BP": block_p, "BQ": sub, "num_warps": 4, "num_stages": 1})
    return y, final


def compare_interpreted(chunk=32, sub=16, block_p=16):
    """Both kernels under the Triton interpreter on one tiny problem; returns the largest differences."""
    problem = tiny_problem()
    hand_y, hand_final = run_hand_interpreted(*problem, chunk, sub, block_p)
    ours_y, ours_final = run_tilekit_interpreted(*problem, chunk, sub, block_p)
    want_y, want_final = sequential(*problem)
    diffs = {"y tilekit vs hand": (ours_y.double() - hand_y.double()).abs().max().item(),
             "final tilekit vs hand": (ours_final.double() - hand_final.double()).abs().max().item(),
             "y tilekit vs float64": (ours_y.double() - want_y).abs().max().item(),
             "y hand vs float64": (hand_y.double() - want_y).abs().max().item(),
             "y scale": want_y.abs().max().item()}
    print(f"Triton interpreter, (Bt, L, H, P, N) = {tuple(problem[0].shape) + (problem[3].shape[3],)}, chunk "
          f"{chunk}, sub-chunk {sub}, BP {block_p}, fp16:")
    for k, v in diffs.items():
        print(f"  {k:<24} {v:.3e}")
    return diffs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="sm_90", choices=["sm_80", "sm_90"])
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--skip-interpreter", action="store_true")
    args = ap.parse_args(argv)
    if not args.skip_interpreter:
        compare_interpreted()
    if not args.skip_compile:
        compare_compiled(args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
