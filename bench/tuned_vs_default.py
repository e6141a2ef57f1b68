"""Tuned vs default config on PoCL (OpenCL backend), per shape, for matmul and softmax.

For each shape: ``tilekit tune``'s own ``tune()`` runs with a small trial budget into a temporary cache
directory (your real dispatch table is not touched), then the default and the tuned config are re-timed side
by side in one worker, alternating, with the tuner's timing code, and the speedup printed.

    python -m tilekit.bench.tuned_vs_default                     # 2 shapes per op, 12 trials each
    python -m tilekit.bench.tuned_vs_default --trials 20 --shape matmul=512,512,512
    python -m tilekit.bench.tuned_vs_default --quick             # tiny shapes, 3 trials (the CI test)

Numbers are noisy on a shared machine; a speedup below 1.0 can happen when the tuned and default configs
are within noise (the tuner keeps the default if nothing beats it).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile

import torch

from tilekit.autotune import lookup
from tilekit.autotune.protocol import kernels
from tilekit.autotune.tuner import TuneJob, _config_key, tune
from tilekit.autotune.worker import Worker
from tilekit.bench.tune_efficiency import default_of, parse_shape_arg, time_configs

DEFAULT_SHAPES = [("matmul.main", (256, 256, 256)), ("matmul.main", (512, 512, 512)),
                  ("softmax.forward", (256, 1000)), ("softmax.forward", (1024, 512))]
QUICK_SHAPES = [("matmul.main", (32, 32, 32)), ("softmax.forward", (8, 64))]
ROUNDS = 3  # default and tuned are timed alternately, this many times each, so drift hits both alike


@contextlib.contextmanager
def temporary_cache_dir():
    """TILEKIT_CACHE_DIR pointed at a fresh directory (the workers inherit it), restored afterwards."""
    previous = os.environ.get("TILEKIT_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="tilekit-tuned-vs-default-") as path:
        os.environ["TILEKIT_CACHE_DIR"] = path
        lookup.reset()
        try:
            yield path
        finally:
            if previous is None:
                os.environ.pop("TILEKIT_CACHE_DIR", None)
            else:
                os.environ["TILEKIT_CACHE_DIR"] = previous
            lookup.reset()


def compare(job, repeats):
    """Tune ``job``, check the table gives the tuned config back, then time default vs tuned alternately."""
    result = tune(job, progress=False)
    looked_up = lookup.provider(job.kernel.id, job.shape, job.dtype, torch.device("cpu"), job.backend)
    default = default_of(job)
    tuned = {k: result.config[k] for k in job.kernel.tunables.names}
    times = {"default": [], "tuned": []}
    worker = Worker(job.extra_modules)
    try:
        for _ in range(ROUNDS):
            for name, config in (("default", default), ("tuned", tuned)):
                seconds, reason = time_configs(job, [config], repeats=repeats, worker=worker)[_config_key(config)]
                if seconds is None:
                    raise RuntimeError(f"{job.kernel.id} {job.shape}: the {name} config {config} failed: {reason}")
                times[name].append(seconds)
    finally:
        worker.stop()
    default_s, tuned_s = statistics.median(times["default"]), statistics.median(times["tuned"])
    return {"kernel": job.kernel.id, "shape": list(job.shape), "trials": result.timed, "pruned": result.pruned,
            "failed": result.failed, "default_config": default, "tuned_config": tuned,
            "table_gives_tuned": looked_up is not None and _config_key(looked_up) == _config_key(result.config),
            "default_s": default_s, "tuned_s": tuned_s, "speedup": default_s / tuned_s,
            "tuner_default_s": result.default_s, "tuner_tuned_s": result.tuned_s}


def print_rows(rows, trials):
    print()
    print(f"## tuned vs default on opencl (PoCL), {trials} trials per shape, default and tuned re-timed "
          f"alternately {ROUNDS}x in one worker (median of medians)")
    print("| kernel | shape | default ms | tuned ms | speedup | tuned config | trials (pruned, failed) | table gives it |")
    print("|--------|-------|-----------:|---------:|--------:|--------------|------------------------|----------------|")
    for r in rows:
        config = ", ".join(f"{k}={v}" for k, v in r["tuned_config"].items())
        print(f"| {r['kernel']} | {'x'.join(map(str, r['shape']))} | {r['default_s'] * 1e3:.4f} | "
              f"{r['tuned_s'] * 1e3:.4f} | {r['speedup']:.2f}x | {config} | {r['trials']} ({r['pruned']}, "
              f"{r['failed']}) | {'yes' if r['table_gives_tuned'] else 'NO'} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", action="append", default=[],
                    help="KERNEL=SIZES, e.g. matmul=512,512,512 or softmax=1024,512 (repeatable)")
    ap.add_argument("--trials", type=int, default=None, help="timed trials per shape (default 12; --quick 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=30, help="timed runs per side-by-side measurement")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, 3 trials, few repeats")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args(argv)
    registry = kernels()
    trials = args.trials or (3 if args.quick else 12)
    shapes = ([parse_shape_arg(s, registry) for s in args.shape] if args.shape
              else QUICK_SHAPES if args.quick else DEFAULT_SHAPES)
    rows = []
    with temporary_cache_dir():
        for kernel_id, shape in shapes:
            job = TuneJob(kernel=registry[kernel_id], shape=tuple(shape), backend="opencl", trials=trials,
                          seed=args.seed, repeats=3 if args.quick else 10, final_repeats=5 if args.quick else 30,
                          warmup=1 if args.quick else 2)
            rows.append(compare(job, 5 if args.quick else args.repeats))
            print(f"{kernel_id} {shape}: default {rows[-1]['default_s'] * 1e3:.4f} ms, tuned "
                  f"{rows[-1]['tuned_s'] * 1e3:.4f} ms", flush=True)
    print_rows(rows, trials)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
