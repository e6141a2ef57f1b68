"""``tilekit tune`` and ``tilekit cache``: argument parsing and output; the work is in tuner.py and table.py."""
from __future__ import annotations

import json
import os
import sys

import torch

from . import table
from .protocol import resolve

EXIT_FOREIGN = 2


def add_tune_arguments(p, backends):
    p.add_argument("ops", nargs="*", metavar="OP[.KERNEL]", help="what to tune (default: every tunable kernel)")
    p.add_argument("--list", action="store_true", help="list every tunable kernel, its space and shape tuple")
    p.add_argument("--shapes", nargs="+", metavar="SPEC", help="shapes in the op's tuple, e.g. 512,512,512")
    p.add_argument("--dtype", default="float32", help="torch dtype name (default float32)")
    p.add_argument("--backend", choices=backends, help="default: opencl on a CPU-only machine, triton on a GPU")
    p.add_argument("--trials", type=int, default=20, help="timed trials per shape (default 20)")
    p.add_argument("--time-budget", type=float, metavar="SEC", help="stop each study after SEC seconds")
    p.add_argument("--sampler", default="auto", choices=("auto", "tpe", "random", "grid", "cmaes"),
                   help="auto: grid when the valid space fits the trials, else TPE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--storage", help="Optuna storage URL (default: SQLite in the cache directory), e.g. "
                                     "postgresql://user@host/db to share studies between machines")
    p.add_argument("--study", help="study name (default: derived from kernel, dtype, shape and device)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (timing stays exclusive)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted study instead of restarting it")
    p.add_argument("--trial-timeout", type=float, default=120.0, help="seconds before a trial counts as hung")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per trial (default 10 CPU, 50 GPU)")
    p.add_argument("--space", nargs="+", metavar="NAME=V1,V2", default=[],
                   help="search only these candidates of a tunable, e.g. num_stages=1 BM=32,64")
    p.add_argument("--heartbeat", type=int, default=5, help="storage heartbeat interval in seconds; a trial "
                                                            "whose tuner is silent for 2.5x this is failed")
    p.add_argument("--dry-run", action="store_true", help="print what would be tuned and stop")
    p.add_argument("--kernel-module", action="append", default=[], help=argparse_hidden())


def _parse_space(items, k):
    space = {}
    for item in items:
        name, _, values = item.partition("=")
        if not values:
            raise ValueError(f"--space {item!r}: give NAME=V1,V2")
        declared = k.tunables.space.get(name)
        if declared is None:
            raise ValueError(f"--space: {k.id} has no tunable {name!r}; tunables: {', '.join(k.tunables.names)}")
        by_text = {str(v): v for v in declared}
        unknown = [v for v in values.split(",") if v not in by_text]
        if unknown:
            raise ValueError(f"--space: {name}={','.join(unknown)} is not among {k.id}'s candidates {declared}")
        space[name] = [by_text[v] for v in values.split(",")]
    return space or None


def argparse_hidden():
    import argparse
    return argparse.SUPPRESS


def _default_backend():
    return "triton" if torch.cuda.is_available() else "opencl"


def cmd_tune(args):
    from .tuner import TuneJob, search_space, tune, valid_size
    kernels = resolve(args.ops, args.kernel_module)
    if args.list:
        for k in kernels:
            t = k.tunables
            print(f"{k.id}")
            print(f"  shape tuple  {','.join(k.shape_names)}" + (f"  flags {', '.join(k.flags)}" if k.flags else ""))
            print(f"  space        {', '.join(f'{n}={v}' for n, v in t.space.items())}")
            print(f"  valid        {len(t)} configs (at 4-byte elements)")
            for where, shapes in k.default_shapes.items():
                print(f"  {where + ' shapes':<12} {' '.join(','.join(map(str, s)) for s in shapes)}")
        return 0
    dtype = getattr(torch, args.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown --dtype {args.dtype!r}")
    backend = args.backend or _default_backend()
    device = "cuda" if backend in ("triton", "cuda", "hip") and torch.cuda.is_available() else "cpu"
    if args.trials < 1:
        raise ValueError("--trials must be at least 1")
    jobs = []
    for k in kernels:
        space = _parse_space(args.space, k)
        if args.shapes:
            shapes = [k.parse_shape(s) for s in args.shapes]
        else:
            shapes = [k.parse_shape(s) if isinstance(s, str) else (tuple(s), k.canonical_flags(()))
                      for s in k.default_shapes["gpu" if device == "cuda" else "cpu"]]
        for shape, flags in shapes:
            jobs.append(TuneJob(k, shape, dtype=dtype, backend=backend, flags=flags, trials=args.trials,
                                time_budget=args.time_budget, sampler=args.sampler, seed=args.seed,
                                storage=args.storage, study=args.study, workers=args.workers, resume=args.resume,
                                trial_timeout=args.trial_timeout,
                                repeats=args.repeats or (50 if device == "cuda" else 10),
                                final_repeats=max(50, 3 * (args.repeats or 10)) if device == "cuda" else 30,
                                extra_modules=tuple(args.kernel_module), device=device, space=space,
                                heartbeat=args.heartbeat))
    if args.dry_run:
        for j in jobs:
            space = search_space(j)
            print(f"would tune {j.kernel.id} {j.dtype_name} {'x'.join(map(str, j.shape))} on {j.backend} "
                  f"({valid_size(j, space)} valid configs, {j.trials} trials, sampler {j.sampler})")
        return 0
    results = []
    for j in jobs:
        results.append(tune(j))
    print(f"{'kernel':<18} {'dtype':<9} {'shape':<16} {'default ms':>11} {'tuned ms':>9} {'speedup':>8} "
          f"{'trials':>6} {'pruned':>6} {'failed':>6}")
    for r in results:
        print(f"{r.job.kernel.id:<18} {r.job.dtype_name:<9} {'x'.join(map(str, r.job.shape)):<16} "
              f"{r.default_s * 1e3:>11.4f} {r.tuned_s * 1e3:>9.4f} {r.speedup:>7.2f}x {r.timed:>6} {r.pruned:>6} "
              f"{r.failed:>6}")
    if results and results[0].table_path:
        print(f"dispatch table: {results[0].table_path}")
    return 0


# ---- cache --------------------------------------------------------------------------------------------

def add_cache_arguments(p):
    sub = p.add_subparsers(dest="cache_command", required=True)
    sub.add_parser("list", help="every dispatch table and its entries")
    s = sub.add_parser("show", help="the entries of one op (or OP.KERNEL), as JSON")
    s.add_argument("op")
    s = sub.add_parser("clear", help="drop every entry, or those of OP")
    s.add_argument("op", nargs="?")
    s = sub.add_parser("export", help="write every dispatch table to FILE (JSON), to deploy elsewhere")
    s.add_argument("file")
    s = sub.add_parser("import", help="merge the tables in FILE into this machine's")
    s.add_argument("file")
    s.add_argument("--force", action="store_true", help="import tables of another device too")


def _entry_line(e):
    return (f"  {e['kernel']:<18} {e['dtype']:<9} {'x'.join(map(str, e['shape'])):<16} "
            f"{json.dumps(e['config'], sort_keys=True)}  tuned {e['tuned_s'] * 1e3:.4f} ms, "
            f"default {e['default_s'] * 1e3:.4f} ms, {e['trials']} trials")


def cmd_cache(args):
    c = args.cache_command
    if c == "list":
        tables = table.all_tables()
        if not tables:
            print(f"no dispatch tables in {table.tuning_dir()}")
        for path, data in tables:
            if isinstance(data, Exception):
                print(f"{path}: {data}")
                continue
            print(f"{path}  ({data['device']['device']}, {data['device']['arch']}, {data['device']['backend']})")
            for e in data["entries"]:
                print(_entry_line(e))
        return 0
    if c == "show":
        found = [e for _, data in table.all_tables() if not isinstance(data, Exception) for e in data["entries"]
                 if e["kernel"] == args.op or e["kernel"].split(".")[0] == args.op]
        print(json.dumps(found, indent=1, sort_keys=True))
        return 0 if found else 1
    if c == "clear":
        gone = sum(table.remove(path, args.op) for path, data in table.all_tables() if not isinstance(data, Exception))
        print(f"removed {gone} entr{'y' if gone == 1 else 'ies'}")
        return 0
    if c == "export":
        tables = [data for _, data in table.all_tables() if not isinstance(data, Exception)]
        with open(args.file, "w") as f:
            json.dump({"format": "tilekit-dispatch-export-1", "tables": tables}, f, indent=1, sort_keys=True)
        print(f"exported {len(tables)} table(s), {sum(len(t['entries']) for t in tables)} entries, to {args.file}")
        return 0
    if c == "import":
        return _import(args.file, args.force)
    raise AssertionError(c)


def _here_devices():
    """The device keys of this machine: the OpenCL device and the CPU backends, plus CUDA devices."""
    from .device import HARD_KEYS, fingerprint
    out = []
    for backend, dev in (("reference", "cpu"), ("triton", "cpu"), ("opencl", "cpu")) + (
            (("triton", "cuda"), ("cuda", "cuda")) if torch.cuda.is_available() else ()):
        try:
            fp = fingerprint(backend, dev)
        except Exception:
            continue
        out.append({k: fp[k] for k in HARD_KEYS})
    return out


def _import(path, force):
    try:
        with open(path) as f:
            data = json.load(f)
        tables = data["tables"]
        if data.get("format") != "tilekit-dispatch-export-1":
            raise ValueError("not a tilekit export")
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"tilekit cache import: error: {path}: {e}", file=sys.stderr)
        return EXIT_FOREIGN
    here = _here_devices()
    for t in tables:
        if t["device"] not in here and not force:
            d = t["device"]
            print(f"tilekit cache import: error: {path} holds a table for {d['device']} ({d['arch']}, "
                  f"{d['backend']}), which is not a device of this machine; --force imports it anyway",
                  file=sys.stderr)
            return EXIT_FOREIGN
    from .device import table_name
    count = 0
    for t in tables:
        dest = os.path.join(table.tuning_dir(), table_name(t["device"]))
        for e in t["entries"]:
            table.upsert(dest, t["device"], e)
            count += 1
    from . import lookup
    lookup.reset()
    print(f"imported {count} entries from {path}")
    return 0
