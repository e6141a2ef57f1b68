#!/usr/bin/env bash
# moe: the routed Mixtral 8x7B layer (H=4096, F=14336, E=8, top-2, bf16) through tilekit (router matmul,
# moe_route, moe_align, two grouped GEMMs, the fixed-order combine) against the eager loop-over-experts
# reference of bench/problems/moe/moe_layer.py, at M = 1, 64 and 4096 tokens: time per call and max error.
# Prints one JSON object.
#   bash scripts/device_check.d/moe.sh [--dry-run] --device cuda|cpu
source "$(dirname "$0")/args.bash" "$@"
DRY=$DRY DEVICE=$DEVICE "$PY" - <<'PYEOF'
import importlib.util, json, os, time
import torch
import tilekit.ops as ops

dry = os.environ["DRY"] == "1"
device = torch.device("cpu" if dry else os.environ["DEVICE"])
hidden, ffn, experts, top_k = (64, 96, 8, 2) if dry else (4096, 14336, 8, 2)
token_counts = (1, 5) if dry else (1, 64, 4096)
dtype = torch.float32 if dry else torch.bfloat16
repeats = 2 if dry else 20

spec = importlib.util.spec_from_file_location("moe_problem", "bench/problems/moe/moe_layer.py")
problem = importlib.util.module_from_spec(spec)
spec.loader.exec_module(problem)
torch.manual_seed(0)
model = problem.Model(hidden, ffn, experts, top_k, 0.0, str(dtype).split(".")[1]).to(device)
w_gate_up = torch.cat([model.w_gate.data, model.w_up.data], dim=1).contiguous()
w_down, router = model.w_down.data, model.router.data


def timed(fn):
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(); fn(); end.record(); torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    else:
        times = []
        for _ in range(repeats):
            t = time.perf_counter(); fn(); times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[len(times) // 2]


rows = []
with torch.no_grad():
    for tokens in token_counts:
        x = torch.randn(tokens, hidden, device=device).to(dtype)
        ours = ops.moe_layer(x, router, w_gate_up, w_down, top_k)
        eager = model(x)
        err = (ours.double() - eager.double()).abs().max().item()
        # the bench's bound (docs/bench.md): 1e-2 absolute + 1e-2 relative for bf16 / fp16, 1e-4 for fp32
        tol = 1e-4 if dtype == torch.float32 else 1e-2
        ok = bool(((ours.double() - eager.double()).abs() <= tol + tol * eager.double().abs()).all())
        ours_ms = timed(lambda: ops.moe_layer(x, router, w_gate_up, w_down, top_k))
        eager_ms = timed(lambda: model(x))
        rows.append({"tokens": tokens, "tilekit_ms": ours_ms, "eager_ms": eager_ms, "speedup": eager_ms / ours_ms,
                     "max_abs_err": err, "within_bench_tolerance": ok})
        print(f"moe Mixtral M={tokens}: tilekit {ours_ms:.3f} ms, eager {eager_ms:.3f} ms, x{eager_ms / ours_ms:.2f}, "
              f"max err {err:.3g} ({'ok' if ok else 'OVER tolerance'})", flush=True)
print(json.dumps({"family": "moe", "device": str(device), "dtype": str(dtype), "dry_run": dry,
                  "shape": {"H": hidden, "F": ffn, "E": experts, "top_k": top_k}, "rows": rows}))
PYEOF
