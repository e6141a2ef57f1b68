"""The Optuna driver: one study per (kernel, dtype, shape, flags, device key), trials run in workers, the
winner written to the dispatch table.

A trial's life: ask -> the validity rule (PRUNED, costs no run) -> for GPU targets the AOT compile report
(PRUNED on spills, shared memory or registers over the device's limits) -> a config already COMPLETE in the
study (PRUNED as a duplicate) -> a worker compiles, gates and times it (COMPLETE, or FAIL with the reason:
wrong output and its max error, a crash, a hang, an exception). Reasons and configs are trial user
attributes, plain JSON.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field

import optuna
import torch

from . import table
from .device import fingerprint, lock_name
from .protocol import TuneKernel
from .worker import Worker

optuna.logging.set_verbosity(optuna.logging.ERROR)  # tilekit reports trials itself

TUNER_ID = f"{socket.gethostname()}:{os.getpid()}"  # which tuner ran a trial (shared studies)
SAMPLERS = ("auto", "tpe", "random", "grid", "cmaes")
PRUNED_CAP = 10  # statically pruned trials are capped at 10 x --trials

# Per-device limits for the AOT report check: (shared memory per block in bytes, registers per thread).
DEVICE_LIMITS = {"sm_80": (166912, 255), "sm_90": (232448, 255), "sm_90a": (232448, 255),
                 "gfx90a": (65536, 512), "gfx942": (65536, 512)}


@dataclass
class TuneJob:
    kernel: TuneKernel
    shape: tuple
    dtype: torch.dtype = torch.float32
    backend: str = "opencl"
    flags: tuple = ()
    trials: int = 20
    time_budget: float | None = None
    sampler: str = "auto"
    seed: int = 0
    storage: str | None = None
    study: str | None = None
    workers: int = 1
    resume: bool = False
    trial_timeout: float = 60.0
    repeats: int = 10
    warmup: int = 2
    final_repeats: int = 30
    extra_modules: tuple = ()
    # a subset of each tunable's candidates to search (e.g. {"num_stages": [1]}); None searches them all
    space: dict | None = None
    heartbeat: int = 5  # seconds between storage heartbeats; a trial silent for 2.5x this is failed
    write_table: bool = True
    device: str = "cpu"

    def __post_init__(self):
        self.flags = self.kernel.canonical_flags(self.flags)

    @property
    def dtype_name(self):
        return str(self.dtype).replace("torch.", "")


@dataclass
class TuneResult:
    job: TuneJob
    study_name: str
    config: dict
    default_config: dict
    tuned_s: float
    default_s: float
    timed: int
    pruned: int
    failed: int
    table_path: str | None
    entry: dict = field(default_factory=dict)

    @property
    def speedup(self):
        return self.default_s / self.tuned_s if self.tuned_s else float("nan")


# ---- storage ------------------------------------------------------------------------------------------

def default_storage_url():
    return "sqlite:///" + os.path.join(table.tuning_dir(), "studies.sqlite3")


def open_storage(url: str | None, heartbeat_interval: int = 5, grace_period: int = 12):
    """Optuna's RDB storage (SQLite in the cache directory by default, or the URL given, e.g. PostgreSQL),
    with heartbeats on: a trial whose process died becomes FAIL once its heartbeat is older than
    ``grace_period`` seconds, and is retried once (``RetryFailedTrialCallback(max_retry=1)``)."""
    url = url or default_storage_url()
    engine_kwargs = {}
    if url.startswith("sqlite"):
        # Several tuners share the file: wait for SQLite's lock rather than fail at once.
        engine_kwargs = {"connect_args": {"timeout": 120}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    with warnings.catch_warnings(), _schema_creation_lock(url, engine_kwargs):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
            retry = {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
        else:
            retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=1)}
        for attempt in range(5):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                  heartbeat_interval=heartbeat_interval,
                                                  grace_period=grace_period, **retry)
            except Exception as exc:  # a server we could not lock: another tuner created the schema first
                import sqlalchemy.exc
                if attempt == 4 or not isinstance(exc, (sqlalchemy.exc.IntegrityError,
                                                        sqlalchemy.exc.ProgrammingError)):
                    raise
                time.sleep(0.5 * (attempt + 1))


@contextlib.contextmanager
def _schema_creation_lock(url, engine_kwargs):
    """Optuna creates its schema on first use, and two tuners doing that at once collide (a UNIQUE
    violation on ``alembic_version``, seen with SQLite and with PostgreSQL). Serialise the creation:
    a file lock beside a SQLite file, a session advisory lock on PostgreSQL (tuners may be on other
    machines). Other servers rely on the retry in ``open_storage``."""
    if url.startswith("sqlite:///"):
        from filelock import FileLock
        with FileLock(url[len("sqlite:///"):] + ".create.lock", timeout=300):
            yield
        return
    if not url.startswith("postgresql"):
        yield
        return
    import sqlalchemy
    engine = sqlalchemy.create_engine(url, **engine_kwargs)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _PG_SCHEMA_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_SCHEMA_LOCK_KEY})
    finally:
        engine.dispose()


_PG_SCHEMA_LOCK_KEY = 0x74696C656B6974  # "tilekit": one lock for every tilekit tuner on a server


def study_name(job: TuneJob, fp: dict) -> str:
    flags = ",".join(f"{k}={v}" for k, v in job.flags)
    return (f"{job.kernel.id}|{job.dtype_name}|{'x'.join(map(str, job.shape))}"
            f"{'|' + flags if flags else ''}|{fp['device']}|{fp['arch']}|{fp['backend']}")


# ---- search space -------------------------------------------------------------------------------------

def _numeric(values):
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def make_sampler(name, job, space):
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=job.seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=job.seed)
    if name == "grid":
        return optuna.samplers.GridSampler({k: list(v) for k, v in space.items()}, seed=job.seed)
    if name == "cmaes":
        bad = [k for k, v in space.items() if not _numeric(v)]
        if bad:
            raise ValueError(f"--sampler cmaes needs numeric parameters only; {', '.join(bad)} of "
                             f"{job.kernel.id} are not")
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise ValueError("--sampler cmaes needs the 'cmaes' package (pip install cmaes)") from None
        return optuna.samplers.CmaEsSampler(seed=job.seed)
    raise ValueError(f"unknown --sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def search_space(job):
    """The kernel's declared candidates, narrowed by ``job.space`` (which must only name declared values).
    A launch option the backend ignores (num_stages outside Triton) keeps only the default config's value:
    its other candidates would time the same kernel again."""
    from ..backends import record as backend_record
    from ..kernel import LAUNCH_OPTIONS
    space = {k: list(v) for k, v in job.kernel.tunables.space.items()}
    for k, values in (job.space or {}).items():
        if k not in space:
            raise ValueError(f"{job.kernel.id}: no tunable {k!r}; tunables: {', '.join(space)}")
        bad = [v for v in values if v not in space[k]]
        if bad or not values:
            raise ValueError(f"{job.kernel.id}: {k}={bad or values} is not among the candidates {space[k]}")
        space[k] = list(values)
    honoured = backend_record(job.backend).launch_options
    ignored = [k for k in space if k in LAUNCH_OPTIONS and k not in honoured and k not in (job.space or {})]
    if ignored:
        default = job.kernel.default_config_for(job.shape, job.flags, job.dtype, torch.device(job.device))
        for k in ignored:
            space[k] = [default[k]] if default.get(k) in space[k] else space[k][:1]
    for values in space.values():
        if _numeric(values):  # ordinal samplers walk indices: neighbours must stay neighbours
            values.sort()
    return space


def valid_size(job, space):
    import itertools
    keys = list(space)
    return sum(1 for combo in itertools.product(*space.values())
               if job.kernel.why_invalid(dict(zip(keys, combo)), job.dtype, job.shape, job.flags) is None)


def choose_sampler(job, space):
    """``auto``: grid when the valid space is no bigger than the trial budget, TPE otherwise."""
    if job.sampler != "auto":
        return job.sampler
    return "grid" if valid_size(job, space) <= job.trials else "tpe"


# Samplers that model each numeric parameter by its index into the sorted candidates, so that BM=64 is
# near 32 and 128: TPE's Parzen estimators then generalise from a good config to its neighbours (as
# categories, every value is as far from every other). CMA-ES needs numbers anyway.
ORDINAL_SAMPLERS = ("tpe", "cmaes")


def _ordinal(sampler_name, values):
    return sampler_name in ORDINAL_SAMPLERS and _numeric(values)


def suggest(trial, space, sampler_name):
    """The trial's config: a numeric parameter through its index into the (sorted) candidates under an
    ordinal sampler, a category otherwise."""
    return {k: (v[trial.suggest_int(f"{k}#index", 0, len(v) - 1)] if _ordinal(sampler_name, v)
                else trial.suggest_categorical(k, v)) for k, v in space.items()}


def params_of(config, space, sampler_name):
    """The trial parameters that ``suggest`` maps to ``config`` (to enqueue it)."""
    params = {}
    for k, values in space.items():
        if _ordinal(sampler_name, values):
            params[f"{k}#index"] = values.index(config[k])
        else:
            params[k] = config[k]
    return params


# ---- static pruning -----------------------------------------------------------------------------------

def aot_prune_reason(job: TuneJob, config: dict, target: str):
    """Why the candidate's AOT compile for ``target`` rules it out (spills, shared memory or registers over
    the limits), or None. Only for GPU targets; the compile itself needs no GPU."""
    shape_inputs = job.kernel.inputs_for(job.shape, job.flags, job.dtype, torch.Generator().manual_seed(0))
    meta_inputs = tuple(torch.empty(t.shape, dtype=t.dtype, device="meta") for t in shape_inputs)
    out = torch.empty(job.kernel.make_output(shape_inputs).shape, dtype=job.dtype, device="meta")
    _, args, kwargs = job.kernel.launch_args_for(meta_inputs, out, config, job.flags)
    art = job.kernel.kernel.compile(target, *args, backend=job.backend, **kwargs)
    res = art.resources
    smem_limit, reg_limit = DEVICE_LIMITS.get(target, (None, None))
    if (res.get("spills") or 0) > 0:
        return f"AOT {target}: {res['spills']} spilled bytes/registers"
    if smem_limit and (res.get("shared_bytes") or 0) > smem_limit:
        return f"AOT {target}: {res['shared_bytes']} bytes of shared memory, over the {smem_limit}-byte limit"
    regs = res.get("registers") or res.get("vgprs") or 0
    if reg_limit and regs > reg_limit:
        return f"AOT {target}: {regs} registers per thread, over {reg_limit}"
    return None


def _gpu_target(job):
    if job.device != "cuda" or not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    arch = getattr(props, "gcnArchName", "") or f"sm_{props.major}{props.minor}"
    return arch.split(":")[0]


# ---- the study ------------------------------------------------------------------------------------------

class Progress:
    """Trial n of N, best against the default, pruned and failed counts: rich on a terminal, plain lines
    otherwise (one per finished trial)."""

    def __init__(self, title, total, enabled=True):
        import sys
        self.title, self.total, self.enabled = title, total, enabled
        self.rich = None
        self.stream = sys.stderr
        if enabled and sys.stderr.isatty():
            from rich.progress import Progress as RichProgress
            self.rich = RichProgress(transient=False)
            self.rich.start()
            self.task = self.rich.add_task(title, total=total)

    def update(self, state):
        if not self.enabled:
            return
        best, default = state.get("best_s"), state.get("default_s")
        vs = (f"best {best * 1e3:.4f} ms" + (f" (default {default * 1e3:.4f} ms)" if default else "")
              if best else "best -")
        line = (f"{self.title}: trial {state['timed']}/{self.total}  {vs}  pruned {state['pruned']}  "
                f"failed {state['failed']}")
        if self.rich is not None:
            self.rich.update(self.task, completed=state["timed"], description=line)
        else:
            print(line, file=self.stream, flush=True)

    def close(self):
        if self.rich is not None:
            self.rich.stop()


class _Heartbeat:
    """Records the running trial's heartbeat in the storage (Optuna's ``record_heartbeat``) every ``interval`` s."""

    def __init__(self, storage, trial_id, interval):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while True:
            self.storage.record_heartbeat(self.trial_id)
            if self.stop.wait(self.interval):
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _tell(study, trial, value=None, state=None):
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as e:
        # GridSampler calls study.stop() once the grid is done, which only optimize() may; the trial's state
        # is stored before that (Optuna stores it in a finally), and the loop stops on its own.
        if "Study.stop" not in str(e):
            raise


class _AskLock:
    """A thread lock plus, on SQLite, a file lock: one asker at a time on this machine."""

    def __init__(self, path):
        self.thread_lock = threading.Lock()
        self.file_lock = None
        if path:
            from filelock import FileLock
            self.file_lock = FileLock(path, timeout=300, thread_local=False)

    def __enter__(self):
        self.thread_lock.acquire()
        if self.file_lock is not None:
            self.file_lock.acquire()

    def __exit__(self, *exc):
        if self.file_lock is not None:
            self.file_lock.release()
        self.thread_lock.release()


def _ask_lock(job, storage):
    url = job.storage or default_storage_url()
    return _AskLock(url[len("sqlite:///"):] + ".ask.lock" if url.startswith("sqlite:///") else None)


class CandidateFailed(Exception):
    """A candidate that crashed, hung, raised or computed a wrong result: its trial is FAIL."""


def _config_key(config):
    return json.dumps(config, sort_keys=True)


def tune(job: TuneJob, progress: bool = True) -> TuneResult:
    """Run (or ``resume``) the study for ``job`` and write the winner to this device's dispatch table."""
    tk_kernel = job.kernel
    default = tk_kernel.default_config_for(job.shape, job.flags, job.dtype, torch.device(job.device))
    default = {k: default[k] for k in tk_kernel.tunables.names}
    space = search_space(job)
    for k, v in default.items():  # the default is always trial 0, so a narrowed space keeps its values
        if v not in space[k]:
            space[k].append(v)
            if _numeric(space[k]):  # ordinal samplers walk indices: neighbours must stay neighbours
                space[k].sort()
    sampler_name = choose_sampler(job, space)
    fp = fingerprint(job.backend, job.device)
    name = job.study or study_name(job, fp)
    storage = open_storage(job.storage, job.heartbeat, max(2, int(2.5 * job.heartbeat)))
    existing = {s.study_name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)}
    if name in existing and not job.resume and job.storage is None and job.study is None:
        optuna.delete_study(study_name=name, storage=storage)  # a fresh tune of the same problem starts over
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True,
                                sampler=make_sampler(sampler_name, job, space))
    for k, v in {"kernel": tk_kernel.id, "dtype": job.dtype_name, "shape": list(job.shape),
                 "flags": dict(job.flags), "backend": job.backend, "sampler": sampler_name}.items():
        study.set_user_attr(k, v)

    if not study.trials:
        study.enqueue_trial(params_of(default, space, sampler_name), user_attrs={"default": True})

    lock_path = os.path.join(table.tuning_dir(), "locks", lock_name(fp))
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    base_request = {"kernel": tk_kernel.id, "shape": list(job.shape), "flags": dict(job.flags), "dtype": job.dtype_name,
                    "backend": job.backend, "device": job.device, "seed": job.seed, "timing_lock": lock_path,
                    "repeats": job.repeats, "warmup": job.warmup}
    target = _gpu_target(job)
    started = time.monotonic()
    state_lock = threading.Lock()
    # Resumed or shared studies count what is already there towards the budget.
    done = study.get_trials(deepcopy=False)
    counts = {"timed": sum(1 for t in done if t.user_attrs.get("ran")),
              "pruned": sum(1 for t in done if t.state == optuna.trial.TrialState.PRUNED),
              "failed": sum(1 for t in done if t.state == optuna.trial.TrialState.FAIL)}
    counts["in_flight"] = 0
    bar = Progress(f"{tk_kernel.id} {job.dtype_name} {'x'.join(map(str, job.shape))}", job.trials, progress)

    import math
    space_size = math.prod(len(v) for v in space.values())
    seen = {_config_key(t.user_attrs["config"]) for t in done if "config" in t.user_attrs}

    def budget_left():
        if job.time_budget is not None and time.monotonic() - started >= job.time_budget:
            return False
        if len(seen) >= space_size:  # every config of the space has been tried
            return False
        timed = counts["timed"]
        if job.storage is not None:  # a shared study: other tuners' timed trials count towards the one budget
            timed = max(timed, sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("ran")))
        return (timed + counts["in_flight"] < job.trials
                and counts["pruned"] < PRUNED_CAP * job.trials)

    def taken(trial, config):
        """Is ``config`` COMPLETE already, or running in an earlier trial (this tuner's other workers, or
        another tuner on a shared study)? Each trial writes its config before it looks, so of two that
        run one config at once, the later one always sees the earlier."""
        key = _config_key(config)
        TS = optuna.trial.TrialState
        return any(_config_key(t.user_attrs.get("config")) == key
                   for t in study.get_trials(deepcopy=False, states=(TS.COMPLETE, TS.RUNNING))
                   if t.state == TS.COMPLETE or t.number < trial.number)

    def objective(trial, worker):
        config = suggest(trial, space, sampler_name)
        trial.set_user_attr("config", config)
        trial.set_user_attr("tuner", TUNER_ID)
        with state_lock:
            seen.add(_config_key(config))
        why = tk_kernel.why_invalid(config, job.dtype, job.shape, job.flags)
        if why is None and target is not None:
            try:
                why = aot_prune_reason(job, config, target)
            except Exception as e:
                why = f"AOT {target} compile failed: {type(e).__name__}: {e}"
        if why is None and taken(trial, config):
            why = "duplicate: this config is already COMPLETE or running in the study"
        if why is not None:
            trial.set_user_attr("reason", f"pruned: {why}")
            with state_lock:
                counts["pruned"] += 1
            raise optuna.TrialPruned(why)
        try:
            answer = worker.run({**base_request, "config": config}, job.trial_timeout)
        finally:
            with state_lock:
                counts["timed"] += 1
        trial.set_user_attr("ran", True)
        if answer["status"] != "ok":
            trial.set_user_attr("reason", answer["reason"])
            if "max_error" in answer:
                trial.set_user_attr("max_error", answer["max_error"])
            with state_lock:
                counts["failed"] += 1
            raise CandidateFailed(answer["reason"])
        trial.set_user_attr("times_s", answer["times"])
        trial.set_user_attr("timing_interval", answer["interval"])
        trial.set_user_attr("max_error", answer["max_error"])
        if answer.get("retimed"):
            trial.set_user_attr("retimed", True)
        return answer["time_s"]

    ask_lock = _ask_lock(job, storage)

    def one_trial(worker):
        # Ask and tell, with Optuna's own pieces: fail_stale_trials first (a dead tuner's running trial becomes
        # FAIL and is retried once, by the storage's callback), then ask under a lock (on SQLite two askers
        # can pop the same enqueued trial: measured here), a heartbeat while the trial runs, then tell.
        with state_lock:
            if not budget_left():
                return False
            counts["in_flight"] += 1
        try:
            with ask_lock:
                with warnings.catch_warnings():  # "heartbeat is supposed to be used with Study.optimize":
                    warnings.simplefilter("ignore", UserWarning)  # _Heartbeat below records it instead
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(study)
                    trial = study.ask()
            with _Heartbeat(storage, trial._trial_id, job.heartbeat):
                try:
                    value = objective(trial, worker)
                except optuna.TrialPruned:
                    _tell(study, trial, state=optuna.trial.TrialState.PRUNED)
                except CandidateFailed:
                    _tell(study, trial, state=optuna.trial.TrialState.FAIL)
                except BaseException:
                    _tell(study, trial, state=optuna.trial.TrialState.FAIL)
                    raise
                else:
                    _tell(study, trial, value)
        finally:
            with state_lock:
                counts["in_flight"] -= 1
        return True

    def report():
        best = _best(study)
        default_t = _default_trial(study)
        bar.update({**counts, "best_s": best.value if best else None,
                    "default_s": default_t.value if default_t else None})

    workers = [Worker(job.extra_modules) for _ in range(max(1, job.workers))]
    errors = []

    def loop(worker):
        try:
            while one_trial(worker):
                report()
        except BaseException as e:  # surfaced below; a candidate never gets here (workers catch those)
            errors.append(e)

    try:
        if len(workers) == 1:
            loop(workers[0])
        else:
            threads = [threading.Thread(target=loop, args=(w,), daemon=True) for w in workers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
        return _finish(job, study, fp, default, workers[0], base_request, counts)
    finally:
        for w in workers:
            w.stop()
        bar.close()


def _best(study):
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return min(done, key=lambda t: t.value) if done else None


def _default_trial(study):
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if t.user_attrs.get("default"):
            return t
    return None


def _finish(job, study, fp, default, worker, base_request, counts):
    """Re-time the top 3 and the default with more repeats; write the fastest (never slower than the default,
    which is among them) to the table."""
    done = sorted(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                  key=lambda t: t.value)
    candidates = [t.user_attrs["config"] for t in done[:3]]
    if _config_key(default) not in {_config_key(c) for c in candidates}:
        candidates.append(default)
    final = {}
    for config in candidates:
        answer = worker.run({**base_request, "config": config, "repeats": job.final_repeats},
                            job.trial_timeout)
        if answer["status"] == "ok":
            final[_config_key(config)] = (answer["time_s"], config)
    default_entry = final.get(_config_key(default))
    if default_entry is None:
        raise RuntimeError(f"{job.kernel.id}: the default config {default} failed when re-timed; "
                           f"see the study {study.study_name!r} for the reasons")
    tuned_s, config = min(final.values(), key=lambda v: v[0])
    entry = {"kernel": job.kernel.id, "dtype": job.dtype_name, "shape": list(job.shape),
             "bucket": list(job.kernel.bucket_key(job.shape, dict(job.flags))), "flags": dict(job.flags),
             "config": config, "tuned_s": tuned_s, "default_s": default_entry[0], "default_config": default,
             "trials": counts["timed"], "pruned": counts["pruned"], "failed": counts["failed"],
             "study": study.study_name, "kernel_hash": job.kernel.kernel.source_hash,
             "tilekit": fp["tilekit"], "driver": fp["driver"], "runtime": fp["runtime"],
             "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = None
    if job.write_table:
        path = table.table_path(fp)
        table.upsert(path, fp, entry)
        from . import lookup
        lookup.reset()
    return TuneResult(job, study.study_name, config, default, tuned_s, default_entry[0], counts["timed"],
                      counts["pruned"], counts["failed"], path, entry)
