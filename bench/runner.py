"""The suite: for each problem, [plan ->] candidate -> reference -> comparison -> torch.compile baseline.

Trust boundaries:
* plan (``--max-elements``), reference and torch.compile jobs run in a long-lived worker process
  (``WorkerServer``) that never runs candidate code;
* each candidate runs in a fresh process (forked from ``ForkServer``, or ``run_job_in_subprocess``)
  *before* its reference runs, so no reference output exists while candidate code does. Everything
  the candidate started is killed when its job ends (``bench/reaper.py``). Its outputs, one file
  per trial, are loaded with ``weights_only=True`` and compared one trial at a time;
* timing statistics are computed here from the raw samples, and the candidate's own process
  reports whether the timing machinery or tilekit's op registrations were tampered with.
"""
from __future__ import annotations

import dataclasses
import json
import platform
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from tilekit.bench import anticheat
from tilekit.bench.compare import compare_trial, reference_problem
from tilekit.bench.discovery import Problem, find_candidate
from tilekit.bench.isolation import ForkServer, ProcessOutcome, WorkerServer, run_job_in_subprocess
from tilekit.bench.timing import BadSamples, summarise as summarise_timing
from tilekit.bench.worker import trial_path

SUSPICIOUS_SPEEDUP = 10.0        # KernelBench flags speedups above this as likely measurement errors
FAST_P_THRESHOLDS = (0.0, 1.0, 1.5, 2.0)
# torch.compile of a reference (Inductor, a C++ compiler on the CPU) can legitimately take minutes;
# --timeout is about candidates and is not allowed to starve the baseline.
COMPILE_MIN_TIMEOUT_S = 300.0

# Row statuses. Only "correct" counts as correct.
CORRECT = "correct"
INCORRECT = "incorrect"
ANTICHEAT = "anticheat"
ERROR = "error"
CRASH = "crash"
TIMEOUT = "timeout"
OOM = "oom"
NO_CANDIDATE = "no_candidate"
REFERENCE_ERROR = "reference_error"
SKIPPED = "skipped"              # --max-elements could not shrink it: never run at full size
SCORED_STATUSES = (CORRECT, INCORRECT, ANTICHEAT, ERROR, CRASH, TIMEOUT, OOM)


@dataclasses.dataclass
class SuiteConfig:
    problems: list[Problem]
    candidates_dir: Path | None
    device: str = "cpu"
    quick: bool = True
    trials: int = 5
    seed: int = 42
    timeout_s: float = 180.0
    compile_baseline: bool = True
    tilekit_candidates: bool = True          # the anti-cheat then requires a tilekit op
    cuda_runs: int = 100
    cpu_runs: int = 20
    cpu_budget_s: float = 1.0
    poison: bool = True
    cpu_threads: int | None = None           # torch threads in workers; None keeps torch's default
    fork_candidates: bool = True             # fork candidates from a torch-loaded server (Linux, CPU runs)
    workdir: Path | None = None              # kept for inspection when given
    max_elements: int | None = None          # --max-elements: shrink problems above this many elements
    precision: str | None = None             # --precision fp32|fp16|bf16; None keeps the files' dtypes
    policy: str = "strict"                   # --policy strict|kernelbench
    finished: dict = dataclasses.field(default_factory=dict)   # --resume: id -> row already done

    @property
    def seeds(self) -> list[int]:
        return [self.seed + 1000 * i for i in range(self.trials)]

    @property
    def init_seed(self) -> int:
        return self.seed

    def sizes_text(self) -> str:
        """What sizes the rows use, honestly."""
        text = ("QUICK sizes where a problem defines them, otherwise the file's own" if self.quick
                else "the files' own (full) sizes")
        if self.max_elements:
            text += f"; problems above {self.max_elements:,} elements shrunk to fit (--max-elements), or skipped"
        return text


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_description(device: str, worker_threads: int | None = None) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    import os
    threads = worker_threads or torch.get_num_threads()
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, {threads} torch threads per worker"


class SuiteRunner:
    def __init__(self, config: SuiteConfig, on_progress: Callable[[str], None] | None = None):
        self.config = config
        self.on_progress = on_progress or (lambda stage: None)
        self.fork_server: ForkServer | None = None
        self.started = time.time()
        self.results: list[dict] = []

    # ---- jobs ------------------------------------------------------------------------------
    def _make_job(self, directory: Path, kind: str, problem: Problem, candidate: Path | None = None,
                  timing: bool = True, overrides: dict | None = None, check_seed: int | None = None) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        cfg = self.config
        spec = {
            "kind": kind, "problem": str(problem.path), "variant": problem.variant, "quick": cfg.quick,
            "overrides": overrides or {}, "precision": cfg.precision, "max_elements": cfg.max_elements,
            "candidate": str(candidate) if candidate else None, "device": cfg.device,
            "seeds": cfg.seeds, "init_seed": cfg.init_seed, "poison": cfg.poison, "cpu_threads": cfg.cpu_threads,
            "outputs_dir": str(directory), "result_path": str(directory / "result.json"),
            "progress_path": str(directory / "stage.txt"), "check_seed": check_seed,
            "timing": {"enabled": timing, "cuda_runs": cfg.cuda_runs, "cpu_runs": cfg.cpu_runs,
                       "cpu_budget_s": cfg.cpu_budget_s, "seed": secrets.randbits(30)},
        }
        job_path = directory / "job.json"
        job_path.write_text(json.dumps(spec, indent=1))
        return job_path

    @staticmethod
    def _read_result(directory: Path) -> dict | None:
        try:
            result = json.loads((directory / "result.json").read_text())
        except (OSError, ValueError):
            return None
        return result if isinstance(result, dict) else None

    @staticmethod
    def _stage(directory: Path) -> str:
        try:
            stage = (directory / "stage.txt").read_text().strip()
        except OSError:
            stage = ""
        return stage or "start-up, before the job reported a stage"

    # ---- the suite -------------------------------------------------------------------------
    def run(self, on_result: Callable[[dict, dict], None] | None = None) -> dict:
        """Run every problem; ``on_result(row, partial_report)`` after each. Ctrl-C stops the run:
        the report then holds the finished rows, with ``meta["interrupted"]`` set."""
        cfg = self.config
        self.started = time.time()
        own_workdir = cfg.workdir is None
        workdir = Path(tempfile.mkdtemp(prefix="tilekit-bench-")) if own_workdir else Path(cfg.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        server = WorkerServer(workdir / "reference-worker.log")
        # CPU runs only: CUDA cannot be used in a child forked from a process that has touched the
        # driver (importing tilekit's backends may ask torch whether CUDA is available).
        self.fork_server = (ForkServer(workdir / "fork-server.log", preload_tilekit=self._tilekit_candidates())
                            if cfg.fork_candidates and cfg.device == "cpu" and ForkServer.available() else None)
        self.results = []
        interrupted = False
        try:
            if any(p.id not in cfg.finished for p in cfg.problems):
                server.start()                  # both import torch at once, while the first job is prepared
                if self.fork_server is not None and cfg.candidates_dir is not None:
                    self.fork_server.start()
            for index, problem in enumerate(cfg.problems):
                if problem.id in cfg.finished:
                    row = dict(cfg.finished[problem.id], resumed=True)
                else:
                    row_started = time.perf_counter()
                    row = self.run_problem(problem, workdir / f"{index:03d}", server)
                    row["wall_s"] = round(time.perf_counter() - row_started, 3)   # the suite's own cost
                    if own_workdir:
                        shutil.rmtree(workdir / f"{index:03d}", ignore_errors=True)
                self.results.append(row)
                if on_result:
                    on_result(row, self.report())
        except KeyboardInterrupt:
            interrupted = True
        finally:
            server.stop(kill=interrupted)
            if self.fork_server is not None:
                self.fork_server.stop(kill=interrupted)
            if own_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
        return self.report(interrupted=interrupted)

    def _tilekit_candidates(self) -> bool:
        """Whether any candidate to run uses tilekit (its ops are then imported once, in the fork server)."""
        cfg = self.config
        for problem in cfg.problems:
            candidate = find_candidate(problem, cfg.candidates_dir) if problem.id not in cfg.finished else None
            try:
                if candidate is not None and "tilekit" in candidate.read_text(errors="replace"):
                    return True
            except OSError:
                continue
        return False

    def report(self, interrupted: bool = False) -> dict:
        cfg = self.config
        done = {r["id"] for r in self.results}
        meta = self.meta(self.started, time.time())
        meta["interrupted"] = interrupted
        meta["remaining"] = [p.id for p in cfg.problems if p.id not in done]
        return {"meta": meta, "summary": summarise(self.results, cfg.compile_baseline), "results": list(self.results)}

    def meta(self, started: float, finished: float) -> dict:
        cfg = self.config
        return {
            "tool": "tilekit bench", "device": cfg.device, "device_name": device_description(cfg.device, cfg.cpu_threads),
            "sizes": cfg.sizes_text(), "quick": cfg.quick, "max_elements": cfg.max_elements,
            "precision": cfg.precision, "policy": cfg.policy,
            "clock": "cuda-events" if cfg.device.startswith("cuda") else "cpu-wall",
            "timing_protocol": (f"median of >= {cfg.cuda_runs} runs, CUDA events, L2 flushed before each run"
                                if cfg.device.startswith("cuda") else
                                f"median of up to {cfg.cpu_runs} runs within {cfg.cpu_budget_s:g} s (at least 3)")
                               + "; inputs refilled with fresh random data before every call, untimed",
            "trials": cfg.trials, "seeds": cfg.seeds, "timeout_s": cfg.timeout_s,
            "compile_baseline": cfg.compile_baseline, "poison": cfg.poison, "cpu_threads": cfg.cpu_threads,
            "candidates_dir": str(cfg.candidates_dir) if cfg.candidates_dir else None,
            "problem_ids": [p.id for p in cfg.problems],
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "duration_s": round(finished - started, 3),
            "suspicious_speedup": SUSPICIOUS_SPEEDUP,
        }

    def _server_job(self, server: WorkerServer, directory: Path, kind: str, problem: Problem, timeout_s: float,
                    **job) -> tuple[ProcessOutcome, dict | None]:
        outcome = server.run(self._make_job(directory, kind, problem, **job), directory / "result.json", timeout_s)
        return outcome, self._read_result(directory)

    def run_problem(self, problem: Problem, directory: Path, server: WorkerServer) -> dict:
        cfg = self.config
        candidate = find_candidate(problem, cfg.candidates_dir)
        row = {
            "id": problem.id, "family": problem.family, "name": problem.name, "variant": problem.variant,
            "problem_path": str(problem.path), "candidate_path": str(candidate) if candidate else None,
            "status": None, "correct": False, "failure": "", "config": None, "dtype": None,
            "size": "quick" if cfg.quick else "file", "shapes": None, "scaled": {}, "elements": None,
            "policy": cfg.policy, "precision": cfg.precision,
            "anticheat": [], "warnings": [], "trials": [], "timing": {}, "timing_check": None,
            "speedup_eager": None, "speedup_compile": None,
            "suspicious": False, "compile_error": None, "compile_seconds": None, "log_tail": "",
        }

        # 0. --max-elements: measure and shrink the sizes on meta, in the trusted server.
        overrides: dict = {}
        if cfg.max_elements:
            self.on_progress(f"{problem.id}: sizes")
            outcome, plan_result = self._server_job(server, directory / "plan", "plan", problem, cfg.timeout_s)
            failure = self._failure(outcome, plan_result, directory / "plan")
            if failure:
                row.update(status=REFERENCE_ERROR, failure=f"reference: {failure[1]}",
                           log_tail=(plan_result or {}).get("traceback") or outcome.log_tail)
                return row
            plan = plan_result.get("plan") or {}
            if plan.get("skip"):
                row.update(status=SKIPPED, failure=f"skipped, not run at full size: {plan['skip']}")
                return row
            overrides = {name: new for name, (_old, new) in (plan.get("scaled") or {}).items()}
            row.update(scaled=plan.get("scaled") or {}, elements=plan.get("elements"))
            if overrides:
                row["size"] = "shrunk"
            if plan.get("note"):
                row["warnings"].append(plan["note"])

        # 1. The candidate, in its own process, after a static check of its source.
        cand_result, cand_failure = None, None
        cand_dir = directory / "candidate"
        if candidate is not None:
            verdict = anticheat.check_candidate(candidate, require_tilekit_op=True if cfg.tilekit_candidates else None,
                                                policy=cfg.policy)
            row["anticheat"], row["warnings"] = list(verdict.violations), row["warnings"] + list(verdict.warnings)
            self.on_progress(f"{problem.id}: candidate")
            job = self._make_job(cand_dir, "candidate", problem, candidate, overrides=overrides)
            launch = self.fork_server.run if self.fork_server is not None else run_job_in_subprocess
            outcome = launch(job, cand_dir / "result.json", cand_dir / "worker.log", cfg.timeout_s,
                             progress_path=cand_dir / "stage.txt")
            cand_result = self._read_result(cand_dir)
            cand_failure = self._failure(outcome, cand_result, cand_dir)
            if cand_failure:
                row["log_tail"] = (cand_result or {}).get("traceback") or outcome.log_tail
            row["anticheat"] += [f"at run time: {change}" for change in (cand_result or {}).get("tampered") or []]

        # 2. The reference, in the trusted server, once no candidate code is running.
        self.on_progress(f"{problem.id}: reference")
        ref_dir = directory / "reference"
        check = (cand_result or {}).get("timing_check") if not cand_failure else None
        outcome, ref_result = self._server_job(server, ref_dir, "reference", problem, cfg.timeout_s,
                                               overrides=overrides,
                                               check_seed=check.get("seed") if isinstance(check, dict) else None)
        failure = self._failure(outcome, ref_result, ref_dir)
        if failure:
            row.update(status=REFERENCE_ERROR, failure=f"reference: {failure[1]}",
                       log_tail=(ref_result or {}).get("traceback") or outcome.log_tail)
            return row
        row["config"] = ref_result.get("config")
        row["dtype"] = ref_result.get("output_dtype")
        row["shapes"] = ref_result.get("input_shapes")
        row["timing"]["reference_eager"] = _timing_summary(ref_result)
        bad_reference = ""
        for index in range(cfg.trials):                     # one trial in memory at a time
            bad_reference = reference_problem([_load_trial(ref_dir, index)], first_index=index)
            if bad_reference:
                break
        if bad_reference:
            row.update(status=REFERENCE_ERROR, failure=bad_reference)
            return row
        if candidate is None:
            row["status"] = NO_CANDIDATE
            return row

        # 3. Scoring: one trial at a time, then the checked timed call.
        if cand_failure:
            status, message = cand_failure
            row.update(status=status, failure=message)
        elif cand_result.get("input_checksums") != ref_result.get("input_checksums"):
            row.update(status=ERROR, failure="the candidate process saw different inputs than the reference "
                                             "(is get_inputs deterministic under torch.manual_seed?)")
        else:
            self._score(row, ref_dir, cand_dir, cand_result, check)
        if row["anticheat"]:
            cheat = "anti-cheat: " + "; ".join(row["anticheat"])
            if row["status"] in (CORRECT, INCORRECT):
                # Scored as incorrect whatever its outputs; the run's own verdict is kept in the text.
                row.update(status=ANTICHEAT, correct=False,
                           failure=cheat + (f" (outputs: {row['failure']})" if row["failure"] else " (outputs: correct)"))
            else:                                   # a crash/timeout/error stays what it was
                row["failure"] = f"{row['failure']}; {cheat}"
        if not row["correct"]:
            return row

        # 4. Speedups, only for correct candidates.
        cand_ms = _median(row["timing"].get("candidate"))
        eager_ms = _median(row["timing"].get("reference_eager"))
        if cand_ms and eager_ms:
            row["speedup_eager"] = eager_ms / cand_ms
        if cfg.compile_baseline:
            self.on_progress(f"{problem.id}: torch.compile baseline")
            comp_dir = directory / "compile"
            outcome, comp_result = self._server_job(server, comp_dir, "compile", problem,
                                                    max(cfg.timeout_s, COMPILE_MIN_TIMEOUT_S), overrides=overrides)
            failure = self._failure(outcome, comp_result, comp_dir)
            if failure:
                row["compile_error"] = failure[1]
            else:
                row["timing"]["reference_compile"] = _timing_summary(comp_result)
                row["compile_seconds"] = comp_result.get("compile_seconds")
                compiled_ms = _median(row["timing"]["reference_compile"])
                if cand_ms and compiled_ms:
                    row["speedup_compile"] = compiled_ms / cand_ms
        speedups = [s for s in (row["speedup_eager"], row["speedup_compile"]) if s is not None]
        row["suspicious"] = any(s > SUSPICIOUS_SPEEDUP for s in speedups)
        return row

    def _score(self, row: dict, ref_dir: Path, cand_dir: Path, cand_result: dict, check) -> None:
        cfg = self.config
        passed, reason = True, ""
        if cand_result.get("timing"):
            try:
                row["timing"]["candidate"] = summarise_timing(cand_result["timing"])
            except BadSamples as exc:
                row.update(status=ERROR, failure=f"the candidate's timing cannot be used: {exc}")
                return
        try:
            for index, seed in enumerate(cfg.seeds):
                report = compare_trial(_load_trial(ref_dir, index), _load_trial(cand_dir, index))
                row["trials"].append(dict(report, seed=seed))
                if passed and not report["passed"]:
                    passed, reason = False, f"trial {index}: {report['reason']}"
            if passed and cand_result.get("timing"):
                if not isinstance(check, dict):
                    passed, reason = False, "the candidate's process reported no checked timed call"
                else:
                    report = compare_trial(_load_trial(ref_dir, "check"), _load_trial(cand_dir, "timed"))
                    row["timing_check"] = dict(report, index=check.get("index"), runs=check.get("runs"))
                    if not report["passed"]:
                        passed, reason = False, (
                            f"timed call {int(check.get('index', 0)) + 1} of {check.get('runs')} (inputs refilled in "
                            f"place with fresh random data) returned a wrong output: {report['reason']}. "
                            "A result cached across calls?")
        except Exception as exc:  # noqa: BLE001 - the files are written by the candidate's process
            row.update(status=ERROR, failure=f"cannot read the candidate's outputs: {type(exc).__name__}: "
                                             f"{str(exc)[:300]}")
            return
        if cand_result.get("timing_skipped"):
            row["timing"]["candidate_skipped"] = cand_result["timing_skipped"]
        row.update(status=CORRECT if passed else INCORRECT, correct=passed, failure=reason)

    def _failure(self, outcome: ProcessOutcome, result: dict | None, directory: Path) -> tuple[str, str] | None:
        """(status, message) when a job did not finish cleanly, else None."""
        stage = self._stage(directory)
        if outcome.kind == "timeout":
            return TIMEOUT, f"{outcome.detail} (during {stage})"
        if outcome.kind == "crash" or result is None:
            return CRASH, f"process {outcome.detail or 'wrote no result'} (during {stage})"
        if result.get("status") == "oom":
            return OOM, f"out of memory during {result.get('stage')}: {result.get('error')}"
        if result.get("status") != "ok":
            return ERROR, f"{result.get('error')} (during {result.get('stage')})"
        return None


def _load_trial(directory: Path, index) -> list:
    return torch.load(trial_path(directory, index), weights_only=True)["outputs"]


def _timing_summary(result: dict) -> dict | None:
    """A trusted job's raw samples as statistics (None when it was not timed)."""
    samples = result.get("timing")
    if not samples:
        return None
    try:
        return summarise_timing(samples)
    except BadSamples:
        return None


def _median(timing: dict | None) -> float | None:
    return timing.get("median_ms") if timing else None


def summarise(results: list[dict], compile_baseline: bool = True) -> dict:
    """fast_p: the share of scored problems (those with a candidate and a working reference) whose
    candidate is correct and more than p times faster; fast_0 is the correctness rate."""
    scored = [r for r in results if r["status"] in SCORED_STATUSES]
    counts = {status: sum(r["status"] == status for r in results)
              for status in (*SCORED_STATUSES, NO_CANDIDATE, REFERENCE_ERROR, SKIPPED)}

    def fast(p: float, key: str) -> float | None:
        if not scored:
            return None
        hits = sum(1 for r in scored if r["correct"] and (p == 0.0 or (r[key] is not None and r[key] > p)))
        return hits / len(scored)

    return {
        "problems": len(results), "scored": len(scored), "status_counts": counts,
        "fast_p": {f"{p:g}": fast(p, "speedup_eager") for p in FAST_P_THRESHOLDS},
        "fast_p_compile": ({f"{p:g}": fast(p, "speedup_compile") for p in FAST_P_THRESHOLDS}
                           if compile_baseline else None),
        "compile_baselines": sum(r["speedup_compile"] is not None for r in results),
        "suspicious": [r["id"] for r in results if r["suspicious"]],
    }
