#!/usr/bin/env bash
# lowbit: the M = 1 lowbit_linear GEMV (W4 and W3, group 128) against fp16 torch.matmul (cuBLAS) at Llama-3-8B
# projection sizes. Goal on a GPU: >= 3.5x over fp16 for W4 at M = 1 (the Marlin anchor). Prints one JSON object.
#   bash scripts/device_check.d/lowbit.sh [--dry-run] --device cuda|cpu
source "$(dirname "$0")/args.bash" "$@"
DRY=$DRY DEVICE=$DEVICE "$PY" - <<'PYEOF'
import json, os, time
import torch
import tilekit.ops
from tilekit import quant

dry = os.environ["DRY"] == "1"
device = torch.device("cpu" if dry else os.environ["DEVICE"])
shapes = [(1, 64, 256)] if dry else [(1, 4096, 4096), (1, 14336, 4096), (1, 4096, 14336)]
fmts = ["int4"] if dry else ["int4", "int3"]
repeats = 3 if dry else 100


def timed(fn):
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(repeats):
            start.record(); fn(); end.record(); torch.cuda.synchronize()
            times.append(start.elapsed_time(end) * 1e3)
    else:
        times = []
        for _ in range(repeats):
            t = time.perf_counter(); fn(); times.append((time.perf_counter() - t) * 1e6)
    return sorted(times)[len(times) // 2]


rows = []
for m, n, k in shapes:
    w = torch.randn(n, k)
    x = torch.randn(m, k, dtype=torch.float16, device=device)
    w16 = w.to(torch.float16).to(device)
    fp16_us = timed(lambda: x @ w16.T) if device.type == "cuda" else timed(lambda: (x.float() @ w16.float().T))
    for fmt in fmts:
        qw = quant.quantize(w, fmt, group_size=128).to(device)
        y = tilekit.ops.lowbit_linear(x, qw)
        err = (y.double() - (x.double() @ qw.dequantize(torch.float64).to(device).T)).abs().max().item()
        us = timed(lambda: tilekit.ops.lowbit_linear(x, qw))
        rows.append({"shape": [m, n, k], "fmt": fmt, "lowbit_us": us, "fp16_us": fp16_us,
                     "speedup_vs_fp16": fp16_us / us, "max_abs_err": err})
        print(f"lowbit M={m} N={n} K={k} {fmt}: {us:.1f} us, fp16 {fp16_us:.1f} us, x{fp16_us / us:.2f}, "
              f"err {err:.3g}", flush=True)
print(json.dumps({"family": "lowbit", "device": str(device), "dry_run": dry, "rows": rows}))
PYEOF
