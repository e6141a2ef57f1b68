#!/usr/bin/env bash
# attention's device step: the FLOP efficiency model of the default configs, then tilekit's attention against
# SDPA (flash backend) at Llama sizes, forward and forward+backward, in TFLOP/s. Prints one JSON object (the
# step's log is what comes back: scripts/device_check.sh writes it to $OUT/family_attention.json).
#   bash scripts/device_check.d/attention.sh [--dry-run] --device cuda|cpu
# The model, per kernel and head dim at the device architecture's default config (ops/attention/op.py):
#   - flop_per_byte_hbm: the whole call's FLOPs over its ideal HBM traffic (q, k, v, o, lse read or written
#     once), what the roofline compares with the device's ridge point;
#   - flop_per_byte_tile: FLOPs per byte a program streams in its loop (fwd: BM, dQ: 1.5 BM, dK/dV: 2 BN for
#     16-bit inputs), what L2 and shared memory must feed;
#   - the shared-memory model of the validity rule ((BM + 2 BN) BD bytes x stages) beside the real compile's
#     shared bytes, registers and spills (AOT for the device's architecture, no launch needed).
# --dry-run: tiny sizes on the CPU (reference backend, fp32), the AOT budget for sm_90 at one tiny config.
source "$(dirname "$0")/args.bash" "$@"
DRY=$DRY DEVICE=$DEVICE "$PY" - <<'PYEOF'
import json, math, os, time, warnings
import torch
import torch.nn.functional as F
import tilekit.ops as ops
from tilekit.backends import TARGETS
from tilekit.ops.attention.op import _default_config, kernel_example

warnings.filterwarnings("ignore", message=".*no dispatch table.*")
dry = os.environ["DRY"] == "1"
device = torch.device("cpu" if dry else os.environ["DEVICE"])
dtype = torch.float32 if dry else torch.bfloat16
repeats = 1 if dry else 20
# (B, Hq, Hkv, Sq, Skv, D, causal): Llama-3-8B prefill (GQA 32/8, D=128) causal, a D=64 MHA model, and
# Llama-3-8B at 8k
shapes = ([(1, 2, 1, 48, 48, 32, True)] if dry else
          [(1, 32, 8, 4096, 4096, 128, True), (4, 16, 16, 2048, 2048, 64, False), (1, 32, 8, 8192, 8192, 128, True)])


def attention_flops(B, Hq, Sq, Skv, D, causal):
    """Forward matmul FLOPs (q k^T and p v), counting only the visible half of a causal square."""
    visible = Sq * Skv - (Sq * (Sq - 1) // 2 if causal and Sq == Skv else 0)
    return 4 * B * Hq * visible * D


def hbm_bytes(B, Hq, Hkv, Sq, Skv, D, elem, kernel):
    q, kv, lse = B * Hq * Sq * D * elem, B * Hkv * Skv * D * elem, B * Hq * Sq * 4
    if kernel == "fwd":
        return 2 * q + 2 * kv + lse                       # read q, k, v; write o, lse
    if kernel == "dq":
        return 3 * q + 2 * kv + 2 * lse                   # read q, dO, k, v, lse, delta; write dq
    return 2 * q + 4 * kv + 2 * lse                       # read q, dO, k, v, lse, delta; write dk, dv


def tile_flop_per_byte(config, kernel, elem):
    bm, bn = config["BM"], config["BN"]
    return {"fwd": bm, "dq": 1.5 * bm, "dkdv": 2 * bn}[kernel] * 2 / elem


def device_target():
    if device.type != "cuda":
        return "sm_90"
    major, minor = torch.cuda.get_device_capability(device)
    name = f"sm_{major}{minor}"
    return name if name in TARGETS else ("sm_90" if major >= 9 else "sm_80")


def budget_rows(target):
    """The default config of each kernel at Llama-3-8B (D = 64, 128; dry run: one tiny config), its model and
    the real compile's resources for ``target``."""
    rows = []
    cases = [("fwd", 32)] if dry else [(k, d) for d in (64, 128) for k in ("fwd", "dkdv", "dq")]
    for kernel, D in cases:
        shape = (1, 32, 8, 4096, 4096, D)
        fwd_flops = attention_flops(1, 32, 4096, 4096, D, True)
        flops = fwd_flops * {"fwd": 1.0, "dq": 1.5, "dkdv": 2.0}[kernel]   # dQ: 3 matmuls, dK/dV: 4 (of the fwd's 2)
        config = _default_config(shape, torch.float16, torch.device("cuda"), kernel, target=target)
        if dry:
            config.update(BM=16, BN=16, num_warps=4, num_stages=1)
        smem_model = (config["BM"] + 2 * config["BN"]) * config["BD"] * 2 * max(1, config["num_stages"])
        row = {"target": target, "kernel": kernel, "D": D, "config": config, "shared_model_bytes": smem_model,
               "flop_per_byte_hbm": round(flops / hbm_bytes(1, 32, 8, 4096, 4096, D, 2, kernel), 1),
               "flop_per_byte_tile": tile_flop_per_byte(config, kernel, 2)}
        try:
            tk_kernel, args, kw = kernel_example(shape, torch.float16, "cuda", kernel, target=target)
            kw.update({k: config[k] for k in ("BM", "BN", "num_warps", "num_stages")})
            art = tk_kernel.compile(target, *args, **kw)
            r, i = art.resources, art.instructions
            row.update(registers=r.get("registers") or r.get("vgprs"), spills=r["spills"],
                       stack_bytes=r.get("stack_bytes"), shared_bytes=r["shared_bytes"],
                       matrix={k: i.get(k, 0) for k in ("wgmma", "mma.sync", "mfma") if i.get(k)})
        except Exception as e:  # the model still stands; say why the compile did not
            row["aot_error"] = f"{type(e).__name__}: {e}"[:300]
        rows.append(row)
        print(f"budget {target} {kernel} D={D}: BM={config['BM']} BN={config['BN']} warps={config['num_warps']} "
              f"stages={config['num_stages']} smem model {smem_model} / real {row.get('shared_bytes')} B, "
              f"regs {row.get('registers')}, spills {row.get('spills')}, FLOP/B hbm {row['flop_per_byte_hbm']} "
              f"tile {row['flop_per_byte_tile']}", flush=True)
    return rows


def timed(fn):
    """Median milliseconds of ``fn`` (CUDA events on a GPU, the wall clock on the CPU), after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(); fn(); end.record(); torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter(); fn(); times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[len(times) // 2]


def sdpa_flash(q, k, v, causal):
    """(SDPA on its flash backend as a no-argument function, how it takes GQA). GQA through enable_gqa; where
    this torch's flash kernel refuses it, K/V expanded to the query heads (once, outside the timing, unless
    they need gradients). On the CPU the math backend."""
    g = q.shape[1] // k.shape[1]
    if device.type != "cuda":
        return (lambda: F.scaled_dot_product_attention(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1),
                                                       is_causal=causal)), "expanded (CPU math backend)"
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def run(kk, vv, **kw):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, kk, vv, is_causal=causal, **kw)
    try:
        run(k, v, enable_gqa=True)
        return (lambda: run(k, v, enable_gqa=True)), "enable_gqa"
    except RuntimeError:
        if k.requires_grad:
            return (lambda: run(k.repeat_interleave(g, 1), v.repeat_interleave(g, 1))), "expanded in the call"
        kx, vx = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
        return (lambda: run(kx, vx)), "expanded once"


def speed_rows():
    rows = []
    for B, Hq, Hkv, Sq, Skv, D, causal in shapes:
        gen = torch.Generator(device=device).manual_seed(0)
        q = torch.randn(B, Hq, Sq, D, device=device, dtype=dtype, generator=gen)
        k = torch.randn(B, Hkv, Skv, D, device=device, dtype=dtype, generator=gen)
        v = torch.randn(B, Hkv, Skv, D, device=device, dtype=dtype, generator=gen)
        do = torch.randn(B, Hq, Sq, D, device=device, dtype=dtype, generator=gen)
        flops = attention_flops(B, Hq, Sq, Skv, D, causal)
        row = {"shape": [B, Hq, Hkv, Sq, Skv, D], "causal": causal, "dtype": str(dtype).split(".")[1],
               "fwd_gflop": flops / 1e9, "flop_per_byte_hbm": round(flops / hbm_bytes(B, Hq, Hkv, Sq, Skv, D,
                                                                                     q.element_size(), "fwd"), 1)}
        try:
            sdpa, row["sdpa_gqa"] = sdpa_flash(q, k, v, causal)
            ours_o, want = ops.attention(q, k, v, causal=causal), sdpa()
            row["max_abs_err_vs_sdpa"] = (ours_o.float() - want.float()).abs().max().item()
            for name, fn in (("tilekit", lambda: ops.attention(q, k, v, causal=causal)), ("sdpa_flash", sdpa)):
                ms = timed(fn)
                row[f"{name}_fwd_ms"], row[f"{name}_fwd_tflops"] = ms, flops / ms / 1e9
            # forward + backward: 2 + 5 matmul-equivalents of the forward's 2 (dq, dk, dv, dp, and the recompute)
            qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
            for name, fwd in (("tilekit", lambda: ops.attention(qg, kg, vg, causal=causal)),
                              ("sdpa_flash", sdpa_flash(qg, kg, vg, causal)[0])):
                ms = timed(lambda: torch.autograd.grad(fwd(), (qg, kg, vg), do))
                row[f"{name}_fwdbwd_ms"], row[f"{name}_fwdbwd_tflops"] = ms, 3.5 * flops / ms / 1e9
            row["fwd_speed_vs_sdpa"] = row["sdpa_flash_fwd_ms"] / row["tilekit_fwd_ms"]
            row["fwdbwd_speed_vs_sdpa"] = row["sdpa_flash_fwdbwd_ms"] / row["tilekit_fwdbwd_ms"]
        except Exception as e:  # one shape's failure (e.g. no flash kernel) does not lose the others
            row["error"] = f"{type(e).__name__}: {e}"[:400]
        rows.append(row)
        print(f"speed {row['shape']} causal={causal}: " + ("error " + row["error"] if "error" in row else
              f"fwd tilekit {row['tilekit_fwd_tflops']:.3g} vs SDPA {row['sdpa_flash_fwd_tflops']:.3g} TFLOP/s, "
              f"fwd+bwd {row['tilekit_fwdbwd_tflops']:.3g} vs {row['sdpa_flash_fwdbwd_tflops']:.3g}, "
              f"max err {row['max_abs_err_vs_sdpa']:.3g}"), flush=True)
    return rows


target = device_target()
result = {"family": "attention", "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(),
          "dry_run": dry, "target": target, "budget": budget_rows(target), "speed": speed_rows()}
print(json.dumps(result))
PYEOF
