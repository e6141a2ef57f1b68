"""The ``tilekit`` command: info, show, compile, bench, tune, cache."""
from __future__ import annotations

import argparse
import platform
import sys


def _versions():
    out = {"tilekit": None, "python": platform.python_version()}
    import tilekit
    out["tilekit"] = tilekit.__version__
    for mod in ("torch", "triton", "numpy", "jinja2", "optuna", "pyopencl", "cupy"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception as e:  # absent optional packages are reported, not fatal
            out[mod] = f"not installed ({type(e).__name__})"
    return out


def cmd_info(args):
    import torch
    from tilekit.backends import availability
    from tilekit.cache import cache_dir
    print("versions")
    for k, v in _versions().items():
        print(f"  {k:<10} {v}")
    print("backends")
    for name, (ok, why) in availability().items():
        print(f"  {name:<10} {'available  ' if ok else 'unavailable'}  {why}")
    print("devices")
    print(f"  cpu        {platform.processor() or platform.machine()}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            print(f"  cuda:{i}     {p.name} (sm_{p.major}{p.minor})")
    else:
        print("  cuda       none (torch.cuda.is_available() is False)")
    print(f"cache directory  {cache_dir()}")
    from tilekit.backends import cpu_default_line  # the registry decides the CPU default and says why
    print(cpu_default_line())
    return 0


def _parse_shape(text):
    try:
        return tuple(int(s) for s in text.lower().replace("x", ",").split(",") if s)
    except ValueError:
        raise SystemExit(f"bad --shape {text!r}: give integers like 1024,1024,512 or 1024x1024x512") from None


def _example(args, gpu=True, target=None):
    import torch
    from tilekit.ops import DEFAULT_SHAPES, KERNELS
    if args.op not in KERNELS:
        raise SystemExit(f"unknown op {args.op!r}; known: {', '.join(sorted(KERNELS))}")
    shape = _parse_shape(args.shape) if args.shape else DEFAULT_SHAPES[args.op]
    if len(shape) != len(DEFAULT_SHAPES[args.op]):
        raise SystemExit(f"{args.op} takes a {len(DEFAULT_SHAPES[args.op])}-d --shape, got {shape}")
    dtype = getattr(torch, args.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise SystemExit(f"unknown --dtype {args.dtype!r}")
    # a compile for a target gets that architecture's default config (sm_90's tiles may spill on gfx942)
    return KERNELS[args.op](shape, dtype, torch.device("cuda" if gpu else "cpu"), target=target)


def cmd_show(args):
    kernel, example, kwargs = _example(args, gpu=args.backend != "reference")
    print(kernel.source(args.backend, *example, **kwargs))
    return 0


def cmd_compile(args):
    kernel, example, kwargs = _example(args, target=args.target)
    if args.backend:
        kwargs["backend"] = args.backend
    art = kernel.compile(args.target, *example, **kwargs)
    print(art.report())
    if args.asm:
        print()
        print(art.assembly)
    return 0


def cmd_bench(args):
    from tilekit.bench import cli as bench_cli
    return bench_cli.run(args)


def cmd_tune(args):
    from tilekit.autotune import cli as tune_cli
    return tune_cli.cmd_tune(args)


def cmd_cache(args):
    from tilekit.autotune import cli as tune_cli
    return tune_cli.cmd_cache(args)


def build_parser():
    from tilekit.backends import BACKENDS, COMPILING_BACKENDS, TARGETS
    ap = argparse.ArgumentParser(prog="tilekit", description="tile-based GPU kernel DSL: tools")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="versions, backends (available or not, and why), devices, cache directory")
    p.set_defaults(func=cmd_info)

    def op_args(p):
        p.add_argument("op", help="op name (matmul, softmax)")
        p.add_argument("--shape", help="problem shape, e.g. 4096,4096,4096 for matmul (M,N,K) or rows,n for softmax")
        p.add_argument("--dtype", default="float16", help="torch dtype name (default float16)")

    p = sub.add_parser("show", help="print the generated source of an op's kernel for a backend")
    op_args(p)
    p.add_argument("--backend", default="triton", choices=BACKENDS)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("compile", help="compile an op's kernel for a GPU target: resources and instructions")
    op_args(p)
    p.add_argument("--target", required=True, choices=sorted(TARGETS))
    p.add_argument("--backend", choices=COMPILING_BACKENDS, help="default: the target's usual backend")
    p.add_argument("--asm", action="store_true", help="also print the PTX / AMDGCN")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("bench", help="KernelBench-style correctness and speed suite (see docs/bench.md)")
    from tilekit.bench import cli as bench_cli
    bench_cli.add_arguments(p)
    p.set_defaults(func=cmd_bench)

    from tilekit.autotune import cli as tune_cli
    p = sub.add_parser("tune", help="autotune op kernels on this machine and write the dispatch table (docs/tune.md)")
    tune_cli.add_tune_arguments(p, BACKENDS)
    p.set_defaults(func=cmd_tune)
    p = sub.add_parser("cache", help="the dispatch tables: list, show, clear, export, import")
    tune_cli.add_cache_arguments(p)
    p.set_defaults(func=cmd_cache)
    return ap


def main(argv=None):
    from tilekit.errors import TilekitError
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (TilekitError, ValueError) as e:
        # a bad request (unknown target for a backend, a missing tool): say so, without a traceback
        print(f"tilekit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
