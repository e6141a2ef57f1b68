#!/usr/bin/env bash
# attention's device step: tilekit attention forward (and backward) against SDPA at Llama sizes, TFLOP/s,
# plus the FLOP/byte model of each shape. `bash attention.sh [--dry-run] --device cuda|cpu`; writes
# $OUT/family_attention.json. --dry-run uses tiny sizes on the CPU (reference backend).
set -euo pipefail
DRY=0; DEVICE=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --device) DEVICE="$2"; shift ;;
  esac
  shift
done
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
DRY=$DRY DEVICE=$DEVICE OUT=$OUT python - <<'PY'
import json, os, time
import torch, torch.nn.functional as F
import tilekit.ops as ops

dry, device = os.environ["DRY"] == "1", os.environ["DEVICE"]
if dry:
    device = "cpu"
# (B, Hq, Hkv, Sq, Skv, D, causal): Llama-3-8B prefill at D=128, a D=64 model
shapes = [(1, 2, 1, 64, 64, 64, True)] if dry else [(1, 32, 8, 4096, 4096, 128, True),
                                                    (4, 16, 16, 2048, 2048, 64, False)]


def timed(fn, reps):
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


rows = []
for B, Hq, Hkv, Sq, Skv, D, causal in shapes:
    dt = torch.float32 if dry else torch.bfloat16
    q = torch.randn(B, Hq, Sq, D, device=device, dtype=dt)
    k = torch.randn(B, Hkv, Skv, D, device=device, dtype=dt)
    v = torch.randn(B, Hkv, Skv, D, device=device, dtype=dt)
    flops = 4 * B * Hq * Sq * Skv * D * (0.5 if causal else 1.0)
    bytes_moved = (q.numel() * 2 + k.numel() + v.numel()) * q.element_size()
    reps = 1 if dry else 10
    ours = timed(lambda: ops.attention(q, k, v, causal=causal), reps)
    g = Hq // Hkv
    sdpa = timed(lambda: F.scaled_dot_product_attention(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1),
                                                        is_causal=causal), reps)
    rows.append(dict(shape=[B, Hq, Hkv, Sq, Skv, D], causal=causal, flop_per_byte=flops / bytes_moved,
                     tilekit_ms=ours * 1e3, sdpa_ms=sdpa * 1e3, tilekit_tflops=flops / ours / 1e12,
                     sdpa_tflops=flops / sdpa / 1e12, ratio=sdpa / ours))
    print(rows[-1], flush=True)
json.dump({"family": "attention", "device": device, "dry_run": dry, "rows": rows},
          open(os.path.join(os.environ["OUT"], "family_attention.json"), "w"), indent=1)
PY
