"""``tilekit bench``: command-line front end of the suite.

The project CLI wires its ``bench`` subcommand to :func:`add_arguments` and :func:`run`;
``python -m tilekit.bench`` calls :func:`main`.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

DEFAULT_OUT_DIR = "bench_out"
INTERRUPTED_EXIT = 130
# Settings a --resume must share with the run it continues.
RESUME_KEYS = ("device", "quick", "max_elements", "precision", "policy", "trials", "seeds", "candidates_dir",
               "poison")


def _cpu_threads(requested, device):
    if requested is None:
        return 1 if device == "cpu" else None
    return requested or None


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = ("Check correctness and speed of kernels against PyTorch on KernelBench-format problems. "
                          "With no arguments: tilekit's own problems and candidates on the best device "
                          "(quick sizes on the CPU).")
    parser.add_argument("--problems", metavar="DIR|FILE|FAMILY[,FAMILY]",
                        help="a KernelBench-style directory, one problem file, or tilekit problem families "
                             "(default: all of tilekit's problems)")
    parser.add_argument("--candidates", metavar="DIR|tilekit|none", default="tilekit",
                        help="candidates (files defining ModelNew, named like their problem): a directory, "
                             "'tilekit' for tilekit's own (default), or 'none' for reference timings only")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", default=None,
                      help="small sizes (each problem's QUICK); the default on the CPU")
    size.add_argument("--full", dest="quick", action="store_false", help="full LLM-sized shapes (GPU default)")
    parser.add_argument("--max-elements", type=int, metavar="N",
                        help="shrink every problem whose inputs and outputs hold more than N elements, by scaling "
                             "the module-level size integers that reach get_inputs()'s tensor shapes (see "
                             "docs/bench.md); a problem that cannot get under N is skipped, never run at full size")
    parser.add_argument("-k", dest="select", metavar="EXPRESSION",
                        help="only problems whose id matches, as pytest's -k: substrings with and/or/not, "
                             "e.g. -k 'matmul and not ragged'")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"),
                        help="cast floating inputs and both models to this dtype, as KernelBench's precision option "
                             "(default: each file's own dtypes)")
    parser.add_argument("--policy", choices=("strict", "kernelbench"), default="strict",
                        help="anti-cheat policy. strict (default): torch compute in a candidate is a cheat, and a "
                             "tilekit candidate may call only tilekit ops, allocation, view and shape ops; "
                             "kernelbench: as KernelBench, torch layers and compute are reported as warnings")
    parser.add_argument("--resume", action="store_true",
                        help="keep the finished rows of the JSON results (--json, or --out-dir's results.json) of "
                             "an interrupted run with the same settings, and run only the rest")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--json", metavar="PATH", help="write every number as JSON")
    parser.add_argument("--report", metavar="PATH", help="write a Markdown report")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of per-problem speedups")
    parser.add_argument("--out-dir", metavar="DIR", default=DEFAULT_OUT_DIR,
                        help=f"when none of --json/--report/--plot is given, write results.json, report.md "
                             f"and speedups.png here (default: {DEFAULT_OUT_DIR}/)")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="seconds per subprocess job before it is killed and recorded as a timeout "
                             "(default: 180 on the CPU, 600 on a GPU)")
    parser.add_argument("--trials", type=int, default=5, help="correctness trials with fresh seeded inputs (5)")
    parser.add_argument("--seed", type=int, default=42, help="base seed of inputs and weights (42)")
    parser.add_argument("--no-compile", dest="compile_baseline", action="store_false",
                        help="skip the torch.compile baseline")
    parser.add_argument("--runs", type=int, metavar="N",
                        help="timed runs per measurement (GPU: at least and default 100; CPU: default 20, "
                             "bounded by --cpu-budget)")
    parser.add_argument("--cpu-budget", type=float, default=1.0, metavar="S",
                        help="seconds spent timing one thing on the CPU (1.0; at least 3 runs)")
    parser.add_argument("--cpu-threads", type=int, metavar="N",
                        help="torch threads in the worker processes. Default on the CPU: 1, since multi-threaded "
                             "ops on a shared machine stall for whole scheduler slices and produce false "
                             "speedups; 0 keeps torch's own thread count")
    parser.add_argument("--no-poison", dest="poison", action="store_false",
                        help="do not NaN-fill fresh allocations in candidate processes (debugging only)")
    parser.add_argument("--no-fork", dest="fork_candidates", action="store_false",
                        help="start every candidate with a fresh Python interpreter instead of forking it from a "
                             "server that has imported torch (slower; always the case on a GPU and off Linux)")
    parser.add_argument("--workdir", metavar="DIR", help="keep jobs, logs and outputs in DIR for inspection")
    parser.add_argument("--list", action="store_true", help="list the selected problems and candidates, then exit")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.add_argument("--fail-on-incorrect", action="store_true",
                        help="exit with status 1 when any candidate is not correct")
    return parser


def _report_paths(args) -> dict[str, Path]:
    explicit = {key: getattr(args, key) for key in ("json", "report", "plot") if getattr(args, key)}
    if explicit:
        return {key: Path(value) for key, value in explicit.items()}
    out = Path(args.out_dir)
    return {"json": out / "results.json", "report": out / "report.md", "plot": out / "speedups.png"}


def _finished_rows(path: Path, config) -> dict:
    """--resume: the rows of an earlier run at ``path``, after checking it ran with the same settings."""
    from tilekit.bench.discovery import BenchInputError
    from tilekit.bench.runner import SuiteRunner

    try:
        earlier = json.loads(path.read_text())
        meta, rows = earlier["meta"], earlier["results"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BenchInputError(f"--resume: cannot read the earlier results {path}: {exc}") from None
    now = SuiteRunner(config).meta(0.0, 0.0)
    for key in RESUME_KEYS:
        if meta.get(key) != now.get(key):
            raise BenchInputError(f"--resume: {path} was run with {key}={meta.get(key)!r}, this run has "
                                  f"{key}={now.get(key)!r}; use the same settings (or drop --resume)")
    wanted = {p.id for p in config.problems}
    return {row["id"]: row for row in rows if isinstance(row, dict) and row.get("id") in wanted}


def _write_reports(reports, report: dict, paths: dict, plot: bool) -> None:
    if "json" in paths:
        reports.write_json(report, paths["json"])
    if "report" in paths:
        reports.write_markdown(report, paths["report"])
    if plot and "plot" in paths:
        reports.write_plot(report, paths["plot"])


def run(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console

    from tilekit.bench import report as reports
    from tilekit.bench.discovery import (BenchInputError, discover_problems, find_candidate, resolve_candidates_dir,
                                         select_problems)
    from tilekit.bench.runner import SuiteConfig, default_device

    console = Console(stderr=True)
    err = lambda message: console.print(message, highlight=False, markup=False, soft_wrap=True)  # noqa: E731
    try:
        problems = select_problems(discover_problems(args.problems, warn=err), args.select)
        candidates_dir = resolve_candidates_dir(args.candidates)
    except BenchInputError as exc:
        err(f"tilekit bench: error: {exc}")
        return 2
    if not problems:
        err(f"tilekit bench: error: no problem matches -k {args.select!r}")
        return 2
    if args.max_elements is not None and args.max_elements < 1:
        err("tilekit bench: error: --max-elements must be at least 1")
        return 2
    device = args.device or default_device()
    if device == "cuda" and not torch.cuda.is_available():
        err("tilekit bench: error: --device cuda, but torch sees no CUDA device")
        return 2
    quick = args.quick if args.quick is not None else device == "cpu"
    if args.trials < 1:
        err("tilekit bench: error: --trials must be at least 1")
        return 2

    if args.list:
        for problem in problems:
            candidate = find_candidate(problem, candidates_dir)
            print(f"{problem.id}\t{problem.path}\t{candidate or 'no candidate'}")
        return 0

    config = SuiteConfig(
        problems=problems, candidates_dir=candidates_dir, device=device, quick=quick, trials=args.trials,
        seed=args.seed, timeout_s=args.timeout or (180.0 if device == "cpu" else 600.0),
        compile_baseline=args.compile_baseline, tilekit_candidates=args.candidates in (None, "tilekit"),
        cuda_runs=max(args.runs or 100, 100), cpu_runs=args.runs or 20, cpu_budget_s=args.cpu_budget,
        poison=args.poison, cpu_threads=_cpu_threads(args.cpu_threads, device),
        fork_candidates=args.fork_candidates, workdir=Path(args.workdir) if args.workdir else None,
        max_elements=args.max_elements, precision=args.precision, policy=args.policy,
    )
    paths = _report_paths(args)
    if args.resume:
        if "json" not in paths:
            err("tilekit bench: error: --resume reads the finished rows from the JSON results: give --json "
                "(or no --json/--report/--plot, so --out-dir's results.json is used)")
            return 2
        try:
            config.finished = _finished_rows(paths["json"], config) if paths["json"].exists() else {}
        except BenchInputError as exc:
            err(f"tilekit bench: error: {exc}")
            return 2
    with_candidates = sum(find_candidate(p, candidates_dir) is not None for p in problems)
    resumed = f"; {len(config.finished)} finished earlier (--resume)" if config.finished else ""
    err(f"tilekit bench: {len(problems)} problem(s), {with_candidates} with a candidate{resumed}; device {device}; "
        f"sizes: {config.sizes_text()}")

    def write_partial(row: dict, partial: dict) -> None:
        _write_reports(reports, partial, paths, plot=False)

    report = _run_with_progress(config, console, args.progress, write_partial)
    _write_reports(reports, report, paths, plot=True)
    reports.print_console(report)
    for key, path in paths.items():
        err(f"wrote {key}: {path}")
    if report["meta"].get("interrupted"):
        remaining = len(report["meta"]["remaining"])
        command = " ".join(shlex.quote(a) for a in ["tilekit", "bench", *_given_arguments(args)])
        if not args.resume:
            command += " --resume"
        err(f"tilekit bench: interrupted; {len(report['results'])} problem(s) finished and written, {remaining} "
            f"left. To go on: {command}")
        return INTERRUPTED_EXIT
    if args.fail_on_incorrect and any(r["status"] not in ("correct", "no_candidate", "skipped")
                                      for r in report["results"]):
        return 1
    return 0


def _given_arguments(args) -> list[str]:
    given = getattr(args, "argv", None)
    if given is not None:
        return given
    return sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "bench" else sys.argv[1:]


def _run_with_progress(config, console, show_progress: bool, on_row) -> dict:
    """A rich progress bar on a terminal; otherwise one plain line per problem."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from tilekit.bench.report import shapes_text
    from tilekit.bench.runner import SuiteRunner

    total = len(config.problems)
    if not (show_progress and console.is_terminal):
        done = 0

        def print_line(row: dict, partial: dict) -> None:
            nonlocal done
            done += 1
            speedup = f", {row['speedup_eager']:.3g}x vs eager" if row.get("speedup_eager") else ""
            wall = f", {row['wall_s']:.1f} s" if row.get("wall_s") is not None else ", finished earlier"
            print(f"[{done}/{total}] {row['id']}: {row['status']}{speedup}; shapes {shapes_text(row)}{wall}",
                  file=sys.stderr, flush=True)
            on_row(row, partial)
        return SuiteRunner(config).run(on_result=print_line)
    with Progress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task("tilekit bench", total=total)

        def on_stage(stage: str) -> None:
            progress.update(task, description=stage)

        def on_result(row: dict, partial: dict) -> None:
            progress.advance(task)
            progress.update(task, description=f"{row['id']}: {row['status']}")
            on_row(row, partial)

        return SuiteRunner(config, on_progress=on_stage).run(on_result=on_result)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tilekit bench")
    add_arguments(parser)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
