"""The subprocess side of ``tilekit bench``. Never imported by the parent for execution.

``python -m tilekit.bench.worker --job JOB.json`` runs one job and exits (candidates: a fresh
process each, so a crash, hang or leak cannot touch anything else).
``python -m tilekit.bench.worker --serve`` runs reference and torch.compile jobs sent one path per
line on stdin, replying ``@@done <path>`` on its own stdout channel (the parent restarts it if it
dies or hangs). Anything the user's code prints goes to stderr, never into the protocol.
``python -m tilekit.bench.worker --forkserver`` imports torch once, then forks a fresh child
process (its own session, its own log) per candidate job: the isolation of a new process without
paying torch's import time per candidate. It replies ``@@started <path> <pid>`` and, once the child
is reaped, ``@@exit <path> <returncode>`` (negative: killed by that signal).

Jobs are JSON: see ``runner.make_job``. Results are JSON next to a ``torch.save`` file of outputs.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

from tilekit.bench import poison
from tilekit.bench.timing import time_callable

DONE_MARKER = "@@done"
READY_MARKER = "@@ready"


class OutputFormatError(TypeError):
    pass


def size_overrides(module, variant: str | None, quick: bool) -> dict:
    """Module globals to set, in order: the variant, then QUICK (quick mode), then the variant's
    own "quick" dict. QUICK always applies in quick mode, so a variant's full sizes cannot leak
    into a CPU run; what QUICK does not name (dtype, head dim, top-k...) keeps the variant's value."""
    overrides: dict = {}
    variant_quick: dict = {}
    if variant is not None:
        variants = getattr(module, "VARIANTS", None) or {}
        if variant not in variants:
            raise KeyError(f"{module.__file__}: no variant {variant!r} (has: {', '.join(variants)})")
        chosen = dict(variants[variant])
        variant_quick = chosen.pop("quick", None) or {}
        overrides.update(chosen)
    if quick:
        overrides.update(getattr(module, "QUICK", None) or {})
        overrides.update(variant_quick)
    return overrides


def load_module(path: str, role: str, variant: str | None, quick: bool):
    """Import a problem/candidate file by path and apply the size overrides to its globals."""
    digest = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:10]
    name = f"tilekit_bench_{role}_{Path(path).stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module                   # pickling, dataclasses and torch.compile look here
    spec.loader.exec_module(module)
    return module


def apply_overrides(module, overrides: dict) -> None:
    for key, value in overrides.items():
        setattr(module, key, value)


def flatten_outputs(out) -> list:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in flatten_outputs(item)]
    raise OutputFormatError(f"forward returned {type(out).__name__}; expected a tensor or a tuple of tensors")


def to_device(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(o, device) for o in obj)
    return obj


def input_checksum(inputs) -> list:
    """A cheap fingerprint, so parent can tell that both processes saw the same seeded inputs."""
    summary = []
    for item in inputs:
        if isinstance(item, torch.Tensor):
            summary.append([list(item.shape), str(item.dtype),
                            float(item.detach().double().sum()) if item.numel() else 0.0])
        else:
            summary.append(repr(item))
    return summary


def input_bytes(inputs) -> int:
    return sum(t.numel() * t.element_size() for t in inputs if isinstance(t, torch.Tensor))


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text


def main_dtype(outputs: list) -> str | None:
    floats = [t for t in outputs if t.is_floating_point()]
    return str((floats or outputs)[0].dtype) if outputs else None


class Job:
    """One job's execution; ``stage`` says where a crash or hang happened."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.device = spec["device"]
        self.result: dict = {"kind": spec["kind"], "status": "ok", "stage": "start"}
        self.progress_path = spec.get("progress_path")

    def enter(self, stage: str) -> None:
        self.result["stage"] = stage
        if self.progress_path:
            Path(self.progress_path).write_text(stage)

    def build_model(self, module, class_name: str, problem_module):
        if not hasattr(module, class_name):
            raise AttributeError(f"{module.__file__} defines no class {class_name}")
        torch.manual_seed(self.spec["init_seed"])
        init_inputs = problem_module.get_init_inputs()
        model = getattr(module, class_name)(*init_inputs)
        return model.to(self.device)

    def seeded_inputs(self, problem_module, seed: int):
        torch.manual_seed(seed)
        return problem_module.get_inputs()

    def run(self) -> dict:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - everything is reported, the process then exits
            self.result["status"] = "oom" if is_out_of_memory(exc) else "error"
            self.result["error"] = f"{type(exc).__name__}: {exc}"
            self.result["traceback"] = traceback.format_exc(limit=20)
        return self.result

    def _load_problem(self):
        spec = self.spec
        problem = load_module(spec["problem"], "problem", spec["variant"], spec["quick"])
        overrides = size_overrides(problem, spec["variant"], spec["quick"])
        apply_overrides(problem, overrides)
        self.result["config"] = {k: v for k, v in overrides.items()}
        for name in ("Model", "get_inputs", "get_init_inputs"):
            if not hasattr(problem, name):
                raise AttributeError(f"problem {spec['problem']} defines no {name}")
        return problem, overrides

    def _run(self) -> None:
        kind = self.spec["kind"]
        if self.spec.get("cpu_threads"):
            torch.set_num_threads(int(self.spec["cpu_threads"]))
        if kind == "candidate" and self.spec.get("poison", True):
            poison.install()
        self.enter("load")
        problem, overrides = self._load_problem()
        if kind == "compile":
            return self._run_compile(problem)
        if kind == "candidate":
            candidate = load_module(self.spec["candidate"], "candidate", self.spec["variant"], self.spec["quick"])
            apply_overrides(candidate, overrides)       # candidates may read the same size globals
            self.enter("init")
            model = self.build_model(candidate, "ModelNew", problem)
        else:
            self.enter("init")
            model = self.build_model(problem, "Model", problem)

        trials, checksums = [], []
        timing_inputs = None
        for index, seed in enumerate(self.spec["seeds"]):
            self.enter(f"trial {index}")
            inputs = self.seeded_inputs(problem, seed)
            checksums.append(input_checksum(inputs))
            inputs = to_device(inputs, self.device)
            if kind == "candidate" and self.spec.get("poison", True):
                poison.set_active(True)
                poison.dirty_cuda_allocator(self.device, max(64 * 2**20, 4 * input_bytes(inputs)))
            with torch.no_grad():
                outputs = flatten_outputs(model(*inputs))
            synchronize(self.device)
            trials.append([o.detach().to("cpu") for o in outputs])
            if timing_inputs is None:
                timing_inputs = inputs
        self.result["input_checksums"] = checksums
        self.result["output_dtype"] = main_dtype(trials[0]) if trials else None
        self.enter("save")
        torch.save({"trials": trials}, self.spec["outputs_path"])

        timing = self.spec.get("timing") or {}
        has_nan = any(torch.isnan(t).any().item() for trial in trials for t in trial if t.is_floating_point())
        if not timing.get("enabled", True):
            self.result["timing_skipped"] = "timing disabled"
        elif has_nan:
            self.result["timing_skipped"] = "outputs contain NaN"
        elif timing_inputs is not None:
            self.enter("timing")
            poison.set_active(False)
            self.result["timing"] = self._time(lambda: model(*timing_inputs)).as_dict()
        self.enter("done")

    def _time(self, call):
        timing = self.spec.get("timing") or {}

        def timed():
            with torch.no_grad():
                call()
        return time_callable(timed, self.device, cuda_runs=timing.get("cuda_runs", 100),
                             cpu_runs=timing.get("cpu_runs", 20), cpu_budget_s=timing.get("cpu_budget_s", 1.0))

    def _run_compile(self, problem) -> None:
        import torch._dynamo
        torch._dynamo.reset()                        # the server process compiles many problems
        self.enter("init")
        model = self.build_model(problem, "Model", problem)
        inputs = to_device(self.seeded_inputs(problem, self.spec["seeds"][0]), self.device)
        self.enter("compile")
        compiled = torch.compile(model)
        start = time.perf_counter()
        with torch.no_grad():
            compiled(*inputs)
        synchronize(self.device)
        self.result["compile_seconds"] = time.perf_counter() - start
        self.enter("timing")
        self.result["timing"] = self._time(lambda: compiled(*inputs)).as_dict()
        self.enter("done")


def run_job_file(job_path: str) -> dict:
    spec = json.loads(Path(job_path).read_text())
    result = Job(spec).run()
    Path(spec["result_path"]).write_text(json.dumps(result))
    return result


def _protocol_channel():
    """Keep the real stdout for the protocol; send every other write (Python or C) to stderr."""
    sys.stdout.flush()
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def serve() -> int:
    channel = _protocol_channel()
    channel.write(f"{READY_MARKER}\n")          # imports done: job timeouts start counting now
    for line in sys.stdin:
        job_path = line.strip()
        if not job_path:
            continue
        run_job_file(job_path)
        channel.write(f"{DONE_MARKER} {job_path}\n")
    return 0


def _run_forked_child(job_path: str, log_path: str) -> None:
    """In the forked child: own session (so a timeout kills its whole group), own log, then exit
    without running the fork server's cleanup."""
    code = 1
    try:
        os.setsid()
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null_fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null_fd, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.close(null_fd)
        run_job_file(job_path)
        code = 0
    except BaseException:  # noqa: BLE001 - report, then leave through os._exit below
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code)


def fork_server() -> int:
    channel = _protocol_channel()
    for line in sys.stdin:
        if not line.strip():
            continue
        job_path, log_path = line.rstrip("\n").split("\t")
        pid = os.fork()
        if pid == 0:
            channel.close()
            _run_forked_child(job_path, log_path)
        channel.write(f"@@started {job_path} {pid}\n")
        _, status = os.waitpid(pid, 0)
        channel.write(f"@@exit {job_path} {os.waitstatus_to_exitcode(status)}\n")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tilekit.bench.worker")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--job", help="run one job file and exit")
    group.add_argument("--serve", action="store_true", help="run job files named on stdin")
    group.add_argument("--forkserver", action="store_true", help="fork a fresh child per job named on stdin")
    args = parser.parse_args(argv)
    if args.serve:
        return serve()
    if args.forkserver:
        return fork_server()
    _protocol_channel()
    run_job_file(args.job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
