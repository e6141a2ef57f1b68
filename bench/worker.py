"""The subprocess side of ``tilekit bench``. Never imported by the parent for execution.

``python -m tilekit.bench.worker --job JOB.json`` runs one job in a child process and exits
(candidates: a fresh process each, so a crash, hang or leak cannot touch anything else); it is that
child's subreaper and kills whatever the child leaves behind (``bench/reaper.py``).
``python -m tilekit.bench.worker --serve`` runs reference and torch.compile jobs sent one path per
line on stdin, replying ``@@done <path>`` on its own stdout channel (the parent restarts it if it
dies or hangs). Anything the user's code prints goes to stderr, never into the protocol.
``python -m tilekit.bench.worker --forkserver`` imports torch once, then forks a fresh child
process (its own session, its own log) per candidate job: the isolation of a new process without
paying torch's import time per candidate. It is the subreaper of every job's descendants, and kills
them all before it reports the job's exit. It replies ``@@started <path> <pid>`` and, once the child
is reaped, ``@@exit <path> <returncode>`` (negative: killed by that signal).

Jobs are JSON: see ``runner.SuiteRunner._make_job``. Kinds: ``plan`` (``--max-elements``: measure and
shrink the sizes on meta), ``reference``, ``candidate``, ``compile``. Results are JSON (written
atomically) next to one ``torch.save`` file per trial, so no more than one trial's outputs is held at
a time. Timing inputs are refilled in place with fresh random data before every call, outside the
timed bracket, and one randomly chosen timed call's output is kept for the parent to check.
"""
from __future__ import annotations

import argparse
import faulthandler
import hashlib
import importlib.util
import json
import os
import secrets
import signal
import sys
import time
import traceback
from pathlib import Path

import torch

from tilekit.bench import integrity, poison, reaper
from tilekit.bench.timing import time_callable

DONE_MARKER = "@@done"
READY_MARKER = "@@ready"
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# Bound at import, before any candidate code runs: what the worker itself uses to refill inputs,
# pick the checked call and save results. A candidate that patches the originals changes none of these.
_randbelow = secrets.randbelow
_save = torch.save
_copy = torch.Tensor.copy_
_clone = torch.Tensor.clone
_replace = os.replace
_dumps = json.dumps


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


def load_module(path: str, role: str):
    """Import a problem/candidate file by path."""
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


def cast_floating(obj, dtype):
    """``--precision``: floating inputs in ``dtype`` (KernelBench's ``precision`` option)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(cast_floating(o, dtype) for o in obj)
    return obj


def tensor_leaves(obj) -> list:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in tensor_leaves(item)]
    return []


CHECKSUM_CHUNK = 1 << 20          # elements widened to float64 at a time


def _wide_sum(tensor: torch.Tensor):
    """The sum in float64 (complex128), a chunk at a time: ``sum(dtype=torch.float64)`` alone widens
    the whole tensor first, a copy twice the size of a float32 input."""
    flat = tensor.detach().reshape(-1)
    wide = torch.complex128 if flat.is_complex() else torch.float64
    total = 0j if flat.is_complex() else 0.0
    for start in range(0, flat.numel(), CHECKSUM_CHUNK):
        total += flat[start:start + CHECKSUM_CHUNK].sum(dtype=wide).item()
    return repr(total) if flat.is_complex() else float(total)


def input_checksum(inputs) -> list:
    """A cheap fingerprint, so the parent can tell that both processes saw the same seeded inputs.
    The sum accumulates in float64 without a float64 copy of the input."""
    summary = []
    for item in inputs:
        if isinstance(item, torch.Tensor):
            summary.append([list(item.shape), str(item.dtype), _wide_sum(item) if item.numel() else 0.0])
        else:
            summary.append(repr(item))
    return summary


def input_bytes(inputs) -> int:
    return sum(t.numel() * t.element_size() for t in tensor_leaves(inputs))


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text


def describe_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        if top != "tilekit" and importlib.util.find_spec(top) is None:
            text += f" (the module {top!r} is not installed; try: pip install {top})"
    return text


def main_dtype(outputs: list) -> str | None:
    floats = [t for t in outputs if t.is_floating_point()]
    return str((floats or outputs)[0].dtype) if outputs else None


def write_atomically(path: str | Path, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as handle:
        handle.write(text)
    _replace(tmp, path)


def trial_path(outputs_dir: str | Path, index) -> Path:
    return Path(outputs_dir) / f"trial{index}.pt"


class Job:
    """One job's execution; ``stage`` says where a crash or hang happened."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.device = spec["device"]
        self.result: dict = {"kind": spec["kind"], "status": "ok", "stage": "start"}
        self.progress_path = spec.get("progress_path")
        self.precision = PRECISIONS[spec["precision"]] if spec.get("precision") else None
        self.snapshot: integrity.Snapshot | None = None

    def enter(self, stage: str) -> None:
        self.result["stage"] = stage
        if self.progress_path:
            write_atomically(self.progress_path, stage)

    def build_model(self, module, class_name: str, problem_module):
        if not hasattr(module, class_name):
            raise AttributeError(f"{module.__file__} defines no class {class_name}")
        torch.manual_seed(self.spec["init_seed"])
        init_inputs = problem_module.get_init_inputs()
        model = getattr(module, class_name)(*init_inputs)
        model = model.to(self.device)
        return model.to(self.precision) if self.precision is not None else model

    def make_inputs(self, problem_module, seed: int, checksums: list | None = None):
        torch.manual_seed(seed)
        inputs = problem_module.get_inputs()
        if self.precision is not None:
            inputs = cast_floating(inputs, self.precision)
        if checksums is not None:
            checksums.append(input_checksum(inputs))
        return to_device(inputs, self.device)

    def run(self) -> dict:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - everything is reported, the process then exits
            self.result["status"] = "oom" if is_out_of_memory(exc) else "error"
            self.result["error"] = describe_error(exc)
            self.result["traceback"] = traceback.format_exc(limit=20)
        finally:
            if self.snapshot is not None:
                self.result["tampered"] = self.snapshot.changes()
        return self.result

    def _load_problem(self):
        spec = self.spec
        problem = load_module(spec["problem"], "problem")
        overrides = size_overrides(problem, spec["variant"], spec["quick"])
        overrides.update(spec.get("overrides") or {})           # --max-elements, from the plan job
        apply_overrides(problem, overrides)
        self.result["config"] = dict(overrides)
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
        if kind == "candidate" and "tilekit" in Path(self.spec["candidate"]).read_text(errors="replace"):
            _import_tilekit_ops()        # tilekit's registrations, before the candidate can touch them; start-up
        self.enter("load")
        problem, overrides = self._load_problem()
        if kind == "plan":
            return self._run_plan(problem)
        if kind == "compile":
            return self._run_compile(problem)
        if kind == "candidate":
            self.snapshot = integrity.Snapshot()
            candidate = load_module(self.spec["candidate"], "candidate")
            apply_overrides(candidate, overrides)       # candidates may read the same size globals
            self.enter("init")
            model = self.build_model(candidate, "ModelNew", problem)
        else:
            self.enter("init")
            model = self.build_model(problem, "Model", problem)

        checksums: list = []
        has_nan = False
        inputs = None
        for index, seed in enumerate(self.spec["seeds"]):
            self.enter(f"trial {index}")
            inputs = None                                   # one trial's inputs and outputs at a time
            inputs = self.make_inputs(problem, seed, checksums)
            if index == 0:
                self.result["input_shapes"] = [list(t.shape) for t in tensor_leaves(inputs)]
            has_nan |= self._run_trial(model, inputs, trial_path(self.spec["outputs_dir"], index), kind)
        self.result["input_checksums"] = checksums
        if self.spec.get("check_seed") is not None:         # the output of the candidate's checked timed call
            self.enter("timing check")
            check_inputs = self.make_inputs(problem, int(self.spec["check_seed"]))
            self._run_trial(model, check_inputs, trial_path(self.spec["outputs_dir"], "check"), kind)
            del check_inputs

        timing = self.spec.get("timing") or {}
        if not timing.get("enabled", True):
            self.result["timing_skipped"] = "timing disabled"
        elif has_nan:
            self.result["timing_skipped"] = "outputs contain NaN"
        elif inputs is not None:
            self.enter("timing")
            poison.set_active(False)
            self._time_model(model, problem, inputs, keep_one=kind == "candidate")
        self.enter("done")

    def _run_trial(self, model, inputs, path: Path, kind: str) -> bool:
        """One forward; its outputs copied (a candidate may reuse its output buffer on the next
        call) and saved on their own. Returns whether they hold NaN."""
        if kind == "candidate" and self.spec.get("poison", True):
            poison.set_active(True)
            poison.dirty_cuda_allocator(self.device, max(64 * 2**20, 4 * input_bytes(inputs)))
        with torch.no_grad():
            outputs = flatten_outputs(model(*inputs))
        synchronize(self.device)
        saved = [o.detach().to("cpu", copy=True) for o in outputs]
        del outputs
        if self.result.get("output_dtype") is None:
            self.result["output_dtype"] = main_dtype(saved)
        has_nan = any(bool(torch.isnan(t).any()) for t in saved if t.is_floating_point() or t.is_complex())
        _save({"outputs": saved}, str(path))
        return has_nan

    def _refill(self, problem, targets: list, seed: int) -> None:
        """Fresh random inputs (get_inputs under a new seed) copied into the timed tensors in place,
        through ``.data``, which leaves ``_version`` alone: a result memoised on the tensor's
        identity or version is then stale, and the checked call catches it."""
        fresh = tensor_leaves(self.make_inputs(problem, seed))
        if len(fresh) != len(targets) or any(f.shape != t.shape or f.dtype != t.dtype for f, t in zip(fresh, targets)):
            raise ValueError("get_inputs() returns differently shaped tensors under different seeds, so the "
                             "timing inputs cannot be refilled in place")
        for target, new in zip(targets, fresh):
            _copy(target.data, new)

    def _time_model(self, model, problem, inputs, keep_one: bool) -> None:
        timing = self.spec.get("timing") or {}
        base_seed = int(timing.get("seed", 0))
        targets = tensor_leaves(inputs)
        current = {"seed": None}
        kept = {"outputs": None, "seed": None, "index": None}

        def prepare(call_index: int) -> None:
            current["seed"] = base_seed + call_index
            self._refill(problem, targets, current["seed"])

        def after(run_index: int, out) -> None:
            # Reservoir sampling: every timed call is equally likely to be the one checked.
            if keep_one and _randbelow(run_index + 1) == 0:
                kept.update(outputs=[_clone(o.detach()) for o in flatten_outputs(out)], seed=current["seed"],
                            index=run_index)

        def call():
            with torch.no_grad():
                return model(*inputs)
        samples = time_callable(call, self.device, cuda_runs=timing.get("cuda_runs", 100),
                                cpu_runs=timing.get("cpu_runs", 20), cpu_budget_s=timing.get("cpu_budget_s", 1.0),
                                prepare=prepare, after=after)
        self.result["timing"] = samples.as_dict()
        if keep_one and kept["outputs"] is not None:
            synchronize(self.device)
            _save({"outputs": [o.to("cpu") for o in kept["outputs"]]},
                  str(trial_path(self.spec["outputs_dir"], "timed")))
            self.result["timing_check"] = {"seed": kept["seed"], "index": kept["index"],
                                           "runs": len(samples.times_ms)}

    def _run_plan(self, problem) -> None:
        from tilekit.bench import shrink
        self.enter("plan")
        try:
            self.result["plan"] = shrink.plan(problem, int(self.spec["max_elements"]))
        except shrink.ShrinkError as exc:
            self.result["plan"] = {"skip": str(exc)}
        self.enter("done")

    def _run_compile(self, problem) -> None:
        import torch._dynamo
        torch._dynamo.reset()                        # the server process compiles many problems
        self.enter("init")
        model = self.build_model(problem, "Model", problem)
        inputs = self.make_inputs(problem, self.spec["seeds"][0])
        self.enter("compile")
        compiled = torch.compile(model)
        start = time.perf_counter()
        with torch.no_grad():
            compiled(*inputs)
        synchronize(self.device)
        self.result["compile_seconds"] = time.perf_counter() - start
        self.enter("timing")
        self._time_model(compiled, problem, inputs, keep_one=False)
        self.enter("done")


def _import_tilekit_ops() -> None:
    """tilekit's ops register themselves on import; import them before the candidate, so the
    registrations snapshotted are tilekit's own. A missing or broken tilekit.ops is the candidate's
    problem (its own import then fails and is reported)."""
    try:
        import tilekit.ops  # noqa: F401
        # The first call of a custom op imports torch._dynamo, which replaces torch.manual_seed:
        # that must happen before the snapshot, not during the run.
        import torch._dynamo  # noqa: F401
    except Exception:  # noqa: BLE001
        pass


def run_job_file(job_path: str) -> dict:
    spec = json.loads(Path(job_path).read_text())
    result = Job(spec).run()
    write_atomically(spec["result_path"], _dumps(result))
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


def _forked_job(job_path: str, log_path: str, channel) -> None:
    """In the forked child (already in its own session): own log, then the job."""
    channel.close()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.close(null_fd)
    run_job_file(job_path)


def fork_server(preload_tilekit: bool = False) -> int:
    channel = _protocol_channel()
    reaper.become_subreaper()
    if preload_tilekit:
        _import_tilekit_ops()        # trusted: the server never runs candidate code; children inherit it
    for line in sys.stdin:
        if not line.strip():
            continue
        job_path, log_path = line.rstrip("\n").split("\t")
        code = reaper.run_reaped(lambda: _forked_job(job_path, log_path, channel),
                                 on_started=lambda pid: channel.write(f"@@started {job_path} {pid}\n"))
        channel.write(f"@@exit {job_path} {code}\n")
    return 0


def _exit_like(code: int) -> None:
    """Leave with the job child's exit code, or die of the same signal (the parent names it)."""
    if code < 0:
        faulthandler.disable()
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        time.sleep(1)
    os._exit(code if code >= 0 else 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tilekit.bench.worker")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--job", help="run one job file in a child process and exit")
    group.add_argument("--serve", action="store_true", help="run job files named on stdin")
    group.add_argument("--forkserver", action="store_true", help="fork a fresh child per job named on stdin")
    parser.add_argument("--preload-tilekit", action="store_true", help="--forkserver: import tilekit.ops first")
    args = parser.parse_args(argv)
    if args.serve:
        return serve()
    if args.forkserver:
        return fork_server(args.preload_tilekit)
    _protocol_channel()
    reaper.become_subreaper()
    _exit_like(reaper.run_reaped(lambda: run_job_file(args.job)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
