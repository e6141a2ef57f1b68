"""Sample efficiency of the tuner's samplers on the PoCL (OpenCL backend) landscape.

Every valid config of a kernel's space (or, with ``--subset``, of a fixed subset printed in the output) is
measured once, with the tuner's own worker and timing code. Then TPE, random and grid search (Optuna, seeded, built by
``tilekit.autotune.tuner.make_sampler``) are replayed against that table: each asks configs the way
``tilekit tune`` does (the default is trial 0; invalid and repeated configs are pruned and cost no trial) and
we count the trials until one lands within 5% of the exhaustive best. Averaged over the seeds.

    python -m tilekit.bench.tune_efficiency --seeds 20 --json eff.json   # matmul 256^3, softmax 256x1000
    python -m tilekit.bench.tune_efficiency --replay eff.json --seeds 20 # the samplers again, no measuring
    python -m tilekit.bench.tune_efficiency --replay eff.json --seeds 20 --subset  # on the fixed subsets
    python -m tilekit.bench.tune_efficiency --shape matmul=128,128,128 --subset
    python -m tilekit.bench.tune_efficiency --quick                      # tiny shapes and spaces (CI)

Goal (issue 9): TPE needs at most 20% of the space and fewer trials than random. Numbers are noisy on a
shared machine; the replay itself is deterministic given the measured table.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import statistics

import optuna
import torch

from tilekit.autotune import table
from tilekit.autotune.device import fingerprint, lock_name
from tilekit.autotune.protocol import kernels
from tilekit.autotune.tuner import (TuneJob, _config_key, _tell, make_sampler, params_of, search_space,
                                    suggest)
from tilekit.autotune.worker import Worker

SAMPLER_NAMES = ("tpe", "random", "grid")
WITHIN = 1.05  # "within 5% of the exhaustive best"
TPE_SPACE_FRACTION_GOAL = 0.20

# Fixed subsets of the declared spaces (--subset), for a shorter sitting: the whole spaces take about 30
# minutes on 2 cores, half of it in the PoCL builds of a dozen large-tile matmul configs that exceed the trial
# timeout. The default config's values are added to these subsets (not the quick ones, which stay tiny for CI).
FULL_SUBSETS = {
    "matmul.main": {"BM": [32, 64, 128], "BN": [32, 64, 128], "BK": [16, 32, 64], "num_warps": [2, 4, 8]},
    "softmax.forward": {"BM": [1, 2, 4, 8], "BN": [1024, 2048], "num_warps": [1, 2, 4, 8]},
}
QUICK_SUBSETS = {
    "matmul.main": {"BM": [16, 32], "BN": [16, 32], "BK": [16], "num_warps": [2, 4]},
    "softmax.forward": {"BM": [1, 2, 4], "BN": [64], "num_warps": [1, 2]},
}
DEFAULT_SHAPES = {"matmul.main": (256, 256, 256), "softmax.forward": (256, 1000)}
QUICK_SHAPES = {"matmul.main": (32, 32, 32), "softmax.forward": (8, 64)}


def default_of(job):
    """The kernel's default config for the job's shape, tunables only (what the tuner enqueues as trial 0)."""
    config = job.kernel.default_config(job.shape, job.dtype, torch.device(job.device))
    return {k: config[k] for k in job.kernel.tunables.names}


def job_space(job, include_default=True):
    """The tuner's search space for ``job`` (``search_space``), plus the default's values, as the tuner does."""
    space = search_space(job)
    if include_default:
        for k, v in default_of(job).items():
            if v not in space[k]:
                space[k] = sorted(space[k] + [v])
    return space


def valid_configs(job, space):
    keys = list(space)
    combos = (dict(zip(keys, values)) for values in itertools.product(*space.values()))
    return [c for c in combos if job.kernel.why_invalid(c, job.dtype, job.shape, job.flags) is None]


def time_configs(job, configs, repeats=None, worker=None, progress=False):
    """{config key: (seconds or None, reason)} measured by the tuner's worker process, under its device lock."""
    fp = fingerprint(job.backend, job.device)
    lock_path = os.path.join(table.tuning_dir(), "locks", lock_name(fp))
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    request = {"kernel": job.kernel.id, "shape": list(job.shape), "dtype": job.dtype_name,
               "backend": job.backend, "device": job.device, "seed": job.seed, "timing_lock": lock_path,
               "repeats": repeats or job.repeats, "warmup": job.warmup}
    own_worker = worker is None
    worker = worker or Worker(job.extra_modules)
    measured = {}
    try:
        for i, config in enumerate(configs):
            answer = worker.run({**request, "config": config}, job.trial_timeout)
            ok = answer["status"] == "ok"
            measured[_config_key(config)] = (answer["time_s"] if ok else None, None if ok else answer["reason"])
            if progress:
                shown = f"{answer['time_s'] * 1e3:.4f} ms" if ok else answer["reason"][:60]
                print(f"  [{i + 1}/{len(configs)}] {config}: {shown}", flush=True)
    finally:
        if own_worker:
            worker.stop()
    return measured


def trials_to_target(job, space, measured, sampler_name, seed, target_s, max_asks):
    """Timed trials a sampler needs before one is within ``target_s``; None if not reached in ``max_asks``."""
    sampler = make_sampler(sampler_name, dataclasses.replace(job, seed=seed), space)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    default = default_of(job)
    if _config_key(default) in measured:
        # as in `tilekit tune`: the default is trial 0, in the sampler's own parameters (indices under TPE)
        study.enqueue_trial(params_of(default, space, sampler_name))
    seen, timed = set(), 0
    for _ in range(max_asks):
        trial = study.ask()
        config = suggest(trial, space, sampler_name)
        key = _config_key(config)
        if key not in measured or key in seen:  # invalid or repeated: pruned, no run, as in the tuner
            _tell(study, trial, state=optuna.trial.TrialState.PRUNED)
            continue
        seen.add(key)
        timed += 1
        seconds = measured[key][0]
        if seconds is None:  # the candidate failed when measured: a FAIL trial, which still cost a run
            _tell(study, trial, state=optuna.trial.TrialState.FAIL)
        else:
            _tell(study, trial, seconds)
            if seconds <= target_s:
                return timed
        if len(seen) == len(measured):
            return None
    return None


def evaluate(job, seeds, progress=True, include_default=True, measured=None, space=None):
    """Measure the space of ``job`` (unless ``measured``, a saved table, is given) and replay the samplers;
    returns a JSON-able result dict."""
    space = space or job_space(job, include_default)
    if measured is None:
        configs = valid_configs(job, space)
        if progress:
            print(f"{job.kernel.id} {'x'.join(map(str, job.shape))}: measuring {len(configs)} valid configs "
                  f"of {json.dumps(space)}", flush=True)
        measured = time_configs(job, configs, progress=progress)
    times = {k: s for k, (s, _) in measured.items() if s is not None}
    if not times:
        raise RuntimeError(f"{job.kernel.id}: every config failed: {next(iter(measured.values()))[1]}")
    best_key = min(times, key=times.get)
    best_s = times[best_key]
    default_key = _config_key(default_of(job))
    max_asks = 50 * len(list(itertools.product(*space.values())))
    rows = {}
    for name in SAMPLER_NAMES:
        counts = [trials_to_target(job, space, measured, name, seed, best_s * WITHIN, max_asks) for seed in seeds]
        # not reached: it would have needed every config (the exhaustive search); counted as the space size
        filled = [len(measured) if c is None else c for c in counts]
        rows[name] = {"per_seed": counts, "mean": statistics.mean(filled),
                      "fraction": statistics.mean(filled) / len(measured),
                      "not_reached": sum(c is None for c in counts)}
    whole = space == job_space(dataclasses.replace(job, space=None))
    return {"kernel": job.kernel.id, "shape": list(job.shape), "space": space, "whole_space": whole,
            "valid": len(measured),
            "failed": len(measured) - len(times), "best_s": best_s, "best_config": json.loads(best_key),
            "default_s": times.get(default_key), "worst_s": max(times.values()),
            "table": {k: v[0] for k, v in measured.items()},
            "samplers": rows, "seeds": list(seeds)}


def goal_met(result):
    tpe, rnd = result["samplers"]["tpe"], result["samplers"]["random"]
    return tpe["fraction"] <= TPE_SPACE_FRACTION_GOAL and tpe["mean"] < rnd["mean"]


def print_result(result):
    shape = "x".join(map(str, result["shape"]))
    print()
    print(f"## {result['kernel']} {shape} on opencl: {result['valid']} valid configs measured "
          f"({'the whole valid space' if result.get('whole_space') else 'fixed subset'} "
          f"{json.dumps(result['space'])}), {result['failed']} failed")
    default = f"{result['default_s'] * 1e3:.4f} ms" if result["default_s"] else "n/a"
    print(f"best {result['best_s'] * 1e3:.4f} ms {result['best_config']}; default {default}; "
          f"worst {result['worst_s'] * 1e3:.4f} ms; target: within 5% of the best, over seeds {result['seeds']}")
    print(f"| sampler | mean trials to 5% | fraction of space | per seed | not reached |")
    print(f"|---------|------------------:|------------------:|----------|------------:|")
    for name, row in result["samplers"].items():
        print(f"| {name} | {row['mean']:.1f} | {row['fraction']:.0%} | {row['per_seed']} | {row['not_reached']} |")
    verdict = "PASS" if goal_met(result) else "MISS"
    tpe, rnd = result["samplers"]["tpe"], result["samplers"]["random"]
    print(f"goal (TPE <= {TPE_SPACE_FRACTION_GOAL:.0%} of the space and fewer trials than random): {verdict} "
          f"(TPE {tpe['fraction']:.0%}, {tpe['mean']:.1f} vs random {rnd['mean']:.1f})")


def parse_shape_arg(text, registry):
    kernel_id, _, sizes = text.partition("=")
    kernel_id = {"matmul": "matmul.main", "softmax": "softmax.forward"}.get(kernel_id, kernel_id)
    if kernel_id not in registry:
        raise SystemExit(f"--shape {text!r}: unknown kernel; give matmul=M,N,K or softmax=ROWS,COLS")
    shape, _ = registry[kernel_id].parse_shape(sizes)
    return kernel_id, shape


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", action="append", default=[],
                    help="KERNEL=SIZES, e.g. matmul=256,256,256 or softmax=256,1000 (repeatable; default both)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds per sampler (default 5)")
    ap.add_argument("--quick", action="store_true", help="tiny shapes and spaces (seconds of measuring)")
    ap.add_argument("--subset", action="store_true",
                    help="measure a fixed subset of each space (about 10 minutes), not every valid config "
                         "(about 30 minutes); with --replay, replay on that subset's part of the table")
    ap.add_argument("--repeats", type=int, default=10, help="timed runs per config (the tuner's default 10)")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--replay", help="skip measuring: replay the samplers on the tables of a --json file")
    args = ap.parse_args(argv)
    registry = kernels()
    if args.replay:
        with open(args.replay) as f:
            saved = json.load(f)
        for old in saved:
            job = TuneJob(kernel=registry[old["kernel"]], shape=tuple(old["shape"]), backend="opencl")
            measured = {k: (v, None if v is not None else "failed") for k, v in old["table"].items()}
            space = old["space"]
            if args.subset:  # replay on the fixed subset's part of the saved table
                space = job_space(dataclasses.replace(job, space=FULL_SUBSETS[old["kernel"]]))
                wanted = {_config_key(c) for c in valid_configs(job, space)}
                missing = wanted - measured.keys()
                if missing:
                    raise SystemExit(f"{args.replay}: {old['kernel']}'s table lacks {len(missing)} configs of "
                                     f"the subset {json.dumps(space)}")
                measured = {k: v for k, v in measured.items() if k in wanted}
            print_result(evaluate(job, range(args.seeds), measured=measured, space=space))
        return 0
    shapes = QUICK_SHAPES if args.quick else DEFAULT_SHAPES
    subsets = QUICK_SUBSETS if args.quick else FULL_SUBSETS if args.subset else {}
    chosen = dict(parse_shape_arg(s, registry) for s in args.shape) if args.shape else dict(shapes)
    results = []
    for kernel_id, shape in chosen.items():
        job = TuneJob(kernel=registry[kernel_id], shape=tuple(shape), backend="opencl",
                      repeats=3 if args.quick else args.repeats, warmup=1 if args.quick else 2,
                      space=subsets.get(kernel_id))
        results.append(evaluate(job, range(args.seeds), include_default=not args.quick))
    for result in results:
        print_result(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
