"""The suite: for each problem, reference -> candidate -> comparison -> timing -> torch.compile baseline.

Trust boundaries:
* reference and torch.compile jobs run in a long-lived worker process (``WorkerServer``); their
  outputs are loaded into this process and the files deleted before any candidate starts;
* each candidate runs in a fresh process (``run_job_in_subprocess``) that never sees reference
  outputs; it writes its own outputs, which this process loads with ``weights_only=True`` and
  compares. A candidate can therefore crash, hang, exhaust memory or scribble on its inputs
  without affecting any other result.
"""
from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from tilekit.bench import anticheat
from tilekit.bench.compare import compare_trials, reference_problem
from tilekit.bench.discovery import Problem, find_candidate
from tilekit.bench.isolation import ForkServer, ProcessOutcome, WorkerServer, run_job_in_subprocess

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

    @property
    def seeds(self) -> list[int]:
        return [self.seed + 1000 * i for i in range(self.trials)]

    @property
    def init_seed(self) -> int:
        return self.seed


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

    # ---- jobs ------------------------------------------------------------------------------
    def _make_job(self, directory: Path, kind: str, problem: Problem, candidate: Path | None = None,
                  timing: bool = True) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        cfg = self.config
        spec = {
            "kind": kind, "problem": str(problem.path), "variant": problem.variant, "quick": cfg.quick,
            "candidate": str(candidate) if candidate else None, "device": cfg.device,
            "seeds": cfg.seeds, "init_seed": cfg.init_seed, "poison": cfg.poison, "cpu_threads": cfg.cpu_threads,
            "outputs_path": str(directory / "outputs.pt"), "result_path": str(directory / "result.json"),
            "progress_path": str(directory / "stage.txt"),
            "timing": {"enabled": timing, "cuda_runs": cfg.cuda_runs, "cpu_runs": cfg.cpu_runs,
                       "cpu_budget_s": cfg.cpu_budget_s},
        }
        job_path = directory / "job.json"
        job_path.write_text(json.dumps(spec, indent=1))
        return job_path

    @staticmethod
    def _read_result(directory: Path) -> dict | None:
        try:
            return json.loads((directory / "result.json").read_text())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _stage(directory: Path) -> str:
        try:
            return (directory / "stage.txt").read_text()
        except OSError:
            return "start"

    # ---- the suite -------------------------------------------------------------------------
    def run(self, on_result: Callable[[dict], None] | None = None) -> dict:
        cfg = self.config
        started = time.time()
        own_workdir = cfg.workdir is None
        workdir = Path(tempfile.mkdtemp(prefix="tilekit-bench-")) if own_workdir else Path(cfg.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        server = WorkerServer(workdir / "reference-worker.log")
        # CPU runs only: CUDA cannot be used in a child forked from a process that has touched the
        # driver (importing tilekit's backends may ask torch whether CUDA is available).
        self.fork_server = (ForkServer(workdir / "fork-server.log")
                            if cfg.fork_candidates and cfg.device == "cpu" and ForkServer.available() else None)
        results = []
        try:
            for index, problem in enumerate(cfg.problems):
                row_started = time.perf_counter()
                row = self.run_problem(problem, workdir / f"{index:03d}", server)
                row["wall_s"] = round(time.perf_counter() - row_started, 3)   # the suite's own cost
                results.append(row)
                if on_result:
                    on_result(row)
        finally:
            server.stop()
            if self.fork_server is not None:
                self.fork_server.stop()
            if own_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
        return {"meta": self.meta(started, time.time()), "summary": summarise(results, cfg.compile_baseline),
                "results": results}

    def meta(self, started: float, finished: float) -> dict:
        cfg = self.config
        return {
            "tool": "tilekit bench", "device": cfg.device, "device_name": device_description(cfg.device, cfg.cpu_threads),
            "sizes": "quick" if cfg.quick else "full",
            "clock": "cuda-events" if cfg.device.startswith("cuda") else "cpu-wall",
            "timing_protocol": (f"median of >= {cfg.cuda_runs} runs, CUDA events, L2 flushed before each run"
                                if cfg.device.startswith("cuda") else
                                f"median of up to {cfg.cpu_runs} runs within {cfg.cpu_budget_s:g} s (at least 3)"),
            "trials": cfg.trials, "seeds": cfg.seeds, "timeout_s": cfg.timeout_s,
            "compile_baseline": cfg.compile_baseline, "poison": cfg.poison, "cpu_threads": cfg.cpu_threads,
            "candidates_dir": str(cfg.candidates_dir) if cfg.candidates_dir else None,
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "duration_s": round(finished - started, 3),
            "suspicious_speedup": SUSPICIOUS_SPEEDUP,
        }

    def run_problem(self, problem: Problem, directory: Path, server: WorkerServer) -> dict:
        cfg = self.config
        candidate = find_candidate(problem, cfg.candidates_dir)
        row = {
            "id": problem.id, "family": problem.family, "name": problem.name, "variant": problem.variant,
            "problem_path": str(problem.path), "candidate_path": str(candidate) if candidate else None,
            "status": None, "correct": False, "failure": "", "config": None, "dtype": None,
            "anticheat": [], "trials": [], "timing": {}, "speedup_eager": None, "speedup_compile": None,
            "suspicious": False, "compile_error": None, "compile_seconds": None, "log_tail": "",
        }

        # 1. Reference, in the trusted server.
        self.on_progress(f"{problem.id}: reference")
        ref_dir = directory / "reference"
        outcome = server.run(self._make_job(ref_dir, "reference", problem), ref_dir / "result.json", cfg.timeout_s)
        ref_result = self._read_result(ref_dir)
        failure = self._failure(outcome, ref_result, ref_dir)
        if failure:
            row.update(status=REFERENCE_ERROR, failure=f"reference: {failure[1]}",
                       log_tail=(ref_result or {}).get("traceback") or outcome.log_tail)
            return row
        reference_trials = torch.load(ref_dir / "outputs.pt", weights_only=True)["trials"]
        (ref_dir / "outputs.pt").unlink()           # no candidate may find it
        row["config"] = ref_result.get("config")
        row["dtype"] = ref_result.get("output_dtype")
        row["timing"]["reference_eager"] = ref_result.get("timing")
        bad_reference = reference_problem(reference_trials)
        if bad_reference:
            row.update(status=REFERENCE_ERROR, failure=bad_reference)
            return row
        if candidate is None:
            row["status"] = NO_CANDIDATE
            return row

        # 2. Static anti-cheat check, then the candidate in its own process.
        row["anticheat"] = anticheat.check_candidate_file(
            candidate, require_tilekit_op=True if cfg.tilekit_candidates else None)
        self.on_progress(f"{problem.id}: candidate")
        cand_dir = directory / "candidate"
        job = self._make_job(cand_dir, "candidate", problem, candidate)
        launch = self.fork_server.run if self.fork_server is not None else run_job_in_subprocess
        outcome = launch(job, cand_dir / "result.json", cand_dir / "worker.log", cfg.timeout_s,
                         progress_path=cand_dir / "stage.txt")
        cand_result = self._read_result(cand_dir)
        failure = self._failure(outcome, cand_result, cand_dir)
        if failure:
            status, message = failure
            row.update(status=status, failure=message,
                       log_tail=(cand_result or {}).get("traceback") or outcome.log_tail)
        else:
            row["timing"]["candidate"] = cand_result.get("timing")
            if cand_result.get("timing_skipped"):
                row["timing"]["candidate_skipped"] = cand_result["timing_skipped"]
            if cand_result.get("input_checksums") != ref_result.get("input_checksums"):
                row.update(status=ERROR, failure="the candidate process saw different inputs than the reference "
                                                 "(is get_inputs deterministic under torch.manual_seed?)")
            else:
                try:
                    candidate_trials = torch.load(cand_dir / "outputs.pt", weights_only=True)["trials"]
                    passed, reports, reason = compare_trials(reference_trials, candidate_trials)
                except Exception as exc:  # noqa: BLE001 - the file is written by the candidate's process
                    row.update(status=ERROR, failure=f"cannot read the candidate's outputs: {type(exc).__name__}: "
                                                     f"{str(exc)[:300]}")
                else:
                    row["trials"] = [dict(r, seed=s) for r, s in zip(reports, cfg.seeds)]
                    row.update(status=CORRECT if passed else INCORRECT, correct=passed, failure=reason)
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

        # 3. Speedups, only for correct candidates.
        cand_ms = _median(row["timing"].get("candidate"))
        eager_ms = _median(row["timing"].get("reference_eager"))
        if cand_ms and eager_ms:
            row["speedup_eager"] = eager_ms / cand_ms
        if cfg.compile_baseline:
            self.on_progress(f"{problem.id}: torch.compile baseline")
            comp_dir = directory / "compile"
            outcome = server.run(self._make_job(comp_dir, "compile", problem), comp_dir / "result.json",
                                 max(cfg.timeout_s, COMPILE_MIN_TIMEOUT_S))
            comp_result = self._read_result(comp_dir)
            failure = self._failure(outcome, comp_result, comp_dir)
            if failure:
                row["compile_error"] = failure[1]
            else:
                row["timing"]["reference_compile"] = comp_result.get("timing")
                row["compile_seconds"] = comp_result.get("compile_seconds")
                compiled_ms = _median(comp_result.get("timing"))
                if cand_ms and compiled_ms:
                    row["speedup_compile"] = compiled_ms / cand_ms
        speedups = [s for s in (row["speedup_eager"], row["speedup_compile"]) if s is not None]
        row["suspicious"] = any(s > SUSPICIOUS_SPEEDUP for s in speedups)
        return row

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


def _median(timing: dict | None) -> float | None:
    return timing.get("median_ms") if timing else None


def summarise(results: list[dict], compile_baseline: bool = True) -> dict:
    """fast_p: the share of scored problems (those with a candidate and a working reference) whose
    candidate is correct and more than p times faster; fast_0 is the correctness rate."""
    scored = [r for r in results if r["status"] in SCORED_STATUSES]
    counts = {status: sum(r["status"] == status for r in results)
              for status in (*SCORED_STATUSES, NO_CANDIDATE, REFERENCE_ERROR)}

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
