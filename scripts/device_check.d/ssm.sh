#!/usr/bin/env bash
# SSM device step: selective_scan (forward, and forward+backward) at Mamba-2.8B prefill (Bt=1, Dm=5120,
# L=2048, N=16, fp16) against the eager reference (bench/problems/selective_scan's chunked Model), with
# errors against the float64 sequential recurrence; and ssd_scan (forward, and forward+backward) at
# Mamba-2-2.7B prefill (Bt=1, L=2048, H=80, P=64, N=128, chunk 256, fp16) against the eager chunked SSD Model
# of bench/problems/selective_scan/ssd_chunk_scan.py (errors against it run in fp32; each gradient's max error
# relative to its max against fp32 eager autograd).
#   bash scripts/device_check.d/ssm.sh [--dry-run] --device cuda|cpu
source "$(dirname "$0")/args.bash" "$@"
DRY=$DRY DEVICE=$DEVICE "$PY" - <<'PYEOF'
import json, os, sys, time
import torch
import tilekit.ops as tk_ops
from tilekit.ops.ssm import op
sys.path.insert(0, "bench/problems/selective_scan")
import selective_scan as problem

dry = os.environ["DRY"] == "1"
device = torch.device(os.environ["DEVICE"])
bt, dm, length, n = (1, 24, 100, 16) if dry else (1, 5120, 2048, 16)
dtype = torch.float16
gen = torch.Generator().manual_seed(0)
u = torch.randn(bt, dm, length, generator=gen).to(dtype)
delta = (0.5 * torch.randn(bt, dm, length, generator=gen)).to(dtype)
A = -(torch.arange(1, n + 1, dtype=torch.float32)[None] * (0.5 + torch.rand(dm, 1, generator=gen)))
B = torch.randn(bt, n, length, generator=gen).to(dtype)
C = torch.randn(bt, n, length, generator=gen).to(dtype)
D = torch.randn(dm, generator=gen)
z = torch.randn(bt, dm, length, generator=gen).to(dtype)
bias = torch.rand(dm, generator=gen) * -4.0
args = [t.to(device) for t in (u, delta, A, B, C, D, z, bias)]


def timed(fn, reps=3 if dry else 20):
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(reps):
            start.record(); fn(); end.record(); torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    else:
        times = []
        for _ in range(reps):
            t = time.perf_counter(); fn(); times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[len(times) // 2]


tilekit_fwd = lambda: tk_ops.selective_scan(*args[:5], D=args[5], z=args[6], delta_bias=args[7], delta_softplus=True)
eager = problem.Model(True, 32).to(device)
eager_fwd = lambda: eager(*args)
with torch.no_grad():
    got = tilekit_fwd()
    want = op.selective_scan_reference(*[a.cpu() for a in args[:5]], D=D, z=z, delta_bias=bias, delta_softplus=True)
    err = (got.cpu().double() - want.double()).abs().max().item()
    t_tk, t_eager = timed(tilekit_fwd), timed(eager_fwd)
leaves = [a.clone().requires_grad_() for a in args]
grad = torch.randn_like(args[0])


def tilekit_train():
    out = tk_ops.selective_scan(*leaves[:5], D=leaves[5], z=leaves[6], delta_bias=leaves[7], delta_softplus=True)
    torch.autograd.grad(out, leaves, grad)


def eager_train():
    torch.autograd.grad(eager(*leaves), leaves, grad)


t_tk_train, t_eager_train = timed(tilekit_train), timed(eager_train)
report = {"shape": [bt, dm, length, n], "dtype": "float16", "device": str(device),
          "max_abs_err_vs_float64": err, "fwd_ms": {"tilekit": t_tk, "eager": t_eager},
          "fwd_bwd_ms": {"tilekit": t_tk_train, "eager": t_eager_train},
          "speedup_vs_eager": {"fwd": t_eager / t_tk, "fwd_bwd": t_eager_train / t_tk_train}}

# ---- ssd_scan at Mamba-2-2.7B prefill ----
import ssd_chunk_scan as ssd_problem
sb, sl, sh, sp, sn, chunk = (1, 100, 4, 16, 16, 32) if dry else (1, 2048, 80, 64, 128, 256)
ssd_problem.BATCH, ssd_problem.SEQLEN, ssd_problem.HEADS, ssd_problem.HEADDIM, ssd_problem.DSTATE = sb, sl, sh, sp, sn
ssd_problem.GROUPS, ssd_problem.DTYPE = 1, "float16"
torch.manual_seed(1)
ssd_args = [t.to(device) for t in ssd_problem.get_inputs()]  # x, dt, A, B, C, D, dt_bias
ssd_eager = ssd_problem.Model(chunk).to(device)
tilekit_ssd = lambda: tk_ops.ssd_scan(*ssd_args[:5], chunk, D=ssd_args[5], dt_bias=ssd_args[6], dt_softplus=True)
with torch.no_grad():
    got = tilekit_ssd().float()
    want = ssd_problem.Model(chunk)(*[a.float() for a in ssd_args])
    ssd_err = (got - want).abs().max().item()
    ssd_scale = want.abs().max().item()
    t_ssd, t_ssd_eager = timed(tilekit_ssd), timed(lambda: ssd_eager(*ssd_args))
ssd_leaves = [a.clone().requires_grad_() if a.is_floating_point() else a for a in ssd_args]
ssd_grad = torch.randn_like(ssd_args[0])


def tilekit_ssd_train():
    y = tk_ops.ssd_scan(*ssd_leaves[:5], chunk, D=ssd_leaves[5], dt_bias=ssd_leaves[6], dt_softplus=True)
    torch.autograd.grad(y, ssd_leaves, ssd_grad)


def eager_ssd_train():
    torch.autograd.grad(ssd_eager(*ssd_leaves), ssd_leaves, ssd_grad)


t_ssd_train, t_ssd_eager_train = timed(tilekit_ssd_train), timed(eager_ssd_train)
# gradient errors: the backward's five kernels against fp32 eager autograd, relative to each gradient's scale
wide = [a.detach().float().requires_grad_() for a in ssd_leaves]
want_grads = torch.autograd.grad(ssd_problem.Model(chunk)(*wide), wide, ssd_grad.float())
got_grads = torch.autograd.grad(tk_ops.ssd_scan(*ssd_leaves[:5], chunk, D=ssd_leaves[5], dt_bias=ssd_leaves[6],
                                                dt_softplus=True), ssd_leaves, ssd_grad)
ssd_grad_err = {name: ((g.float() - w).abs().max() / w.abs().max().clamp_min(1e-30)).item()
                for name, g, w in zip(("x", "dt", "A", "B", "C", "D", "dt_bias"), got_grads, want_grads)}
flops = 2 * sb * sh * sl * (chunk * (sn + sp) + 2 * sp * sn)  # intra-chunk (CB^T, ·x) and state in/out matmuls
report["ssd_scan"] = {"shape": [sb, sl, sh, sp, sn, chunk], "dtype": "float16",
                      "max_abs_err_vs_eager_fp32": ssd_err, "output_scale": ssd_scale,
                      "grad_max_err_relative_to_scale_vs_eager_fp32": ssd_grad_err,
                      "fwd_ms": {"tilekit": t_ssd, "eager": t_ssd_eager},
                      "fwd_bwd_ms": {"tilekit": t_ssd_train, "eager": t_ssd_eager_train},
                      "speedup_vs_eager": {"fwd": t_ssd_eager / t_ssd, "fwd_bwd": t_ssd_eager_train / t_ssd_train},
                      "fwd_tflops_tilekit": flops / (t_ssd * 1e-3) / 1e12}
print(json.dumps(report))
PYEOF
