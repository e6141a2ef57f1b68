"""Tuners as separate processes on the default storage (SQLite in the cache directory): kill -9 mid-trial
then --resume (DESIGN.md's resume rules), a storage lock left by a killed process, 4 concurrent tuners, and
timing exclusive per device across tuners and workers."""
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from tilekit.autotune import table
from tilekit.autotune.tuner import open_storage

FAULTS = os.path.join(os.path.dirname(__file__), "tune_faults.py")
S = optuna.trial.TrialState


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, TILEKIT_CACHE_DIR=str(tmp_path / "cache"), TILEKIT_TEST_SLOW_S="4", PYTHONUNBUFFERED="1")
    e.pop("TILEKIT_TUNING", None)
    return e


def _tune_cmd(*extra):
    return [sys.executable, "-m", "tilekit.cli", "tune", "faults.scale", "--backend", "reference",
            "--kernel-module", FAULTS, "--repeats", "2", "--heartbeat", "1", *extra]


def _studies(env):
    old = os.environ.get("TILEKIT_CACHE_DIR")
    os.environ["TILEKIT_CACHE_DIR"] = env["TILEKIT_CACHE_DIR"]
    try:
        storage = open_storage(None)
        return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).trials
                for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)}
    finally:
        if old is None:
            del os.environ["TILEKIT_CACHE_DIR"]
        else:
            os.environ["TILEKIT_CACHE_DIR"] = old


def _wait_for(predicate, env, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            studies = _studies(env)
        except Exception:  # the storage file is being created
            studies = {}
        if studies and predicate(next(iter(studies.values()))):
            return
        time.sleep(0.5)
    raise AssertionError("the tuner never reached the state to kill it in")


def _kill_tree(proc):
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _hold_lock_and_die(env, code):
    """Start a process that takes a lock, then kill -9 it while it holds it."""
    holder = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    assert holder.stdout.readline().strip() == "locked"
    _kill_tree(holder)


def test_kill_9_mid_trial_then_resume(env):
    args = ("--shapes", "100", "--trials", "4", "--sampler", "grid", "--space", "BLOCK=16,32", "mode=ok,slow")
    first = subprocess.Popen(_tune_cmd(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    # Kill once a trial is finished and a slow one is running (it sleeps 4 s in the worker).
    _wait_for(lambda ts: any(t.state == S.COMPLETE for t in ts) and any(
        t.state == S.RUNNING and t.user_attrs.get("config", {}).get("mode") == "slow" for t in ts), env)
    _kill_tree(first)
    [before] = _studies(env).values()
    finished = {t.number: t.state for t in before if t.state.is_finished()}
    killed = [t.number for t in before if t.state == S.RUNNING]
    assert finished and len(killed) == 1

    # A storage lock held by a killed process: SQLite's lock dies with its holder (so does filelock's flock).
    db = os.path.join(env["TILEKIT_CACHE_DIR"], "tuning", "studies.sqlite3")
    _hold_lock_and_die(env, f"import sqlite3; c = sqlite3.connect({db!r}, isolation_level=None); "
                            f"c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); import time; time.sleep(600)")
    lock = os.path.join(env["TILEKIT_CACHE_DIR"], "tuning", "locks", "cpu.timing.lock")
    _hold_lock_and_die(env, f"from filelock import FileLock; l = FileLock({lock!r}); l.acquire(); "
                            f"print('locked', flush=True); import time; time.sleep(600)")

    time.sleep(3)  # past the heartbeat grace period (2.5 x 1 s): the killed trial is stale
    resumed = subprocess.run(_tune_cmd(*args, "--resume"), env=env, capture_output=True, text=True, timeout=150)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    [after] = _studies(env).values()
    by_number = {t.number: t for t in after}
    for number, state in finished.items():  # every finished trial is kept as it was
        assert by_number[number].state == state
    assert by_number[killed[0]].state == S.FAIL
    retries = [t for t in after if t.system_attrs.get("failed_trial") == killed[0]]
    assert len(retries) == 1 and retries[0].params == by_number[killed[0]].params
    complete = [repr(sorted(t.params.items())) for t in after if t.state == S.COMPLETE]
    assert len(complete) == len(set(complete))  # no config COMPLETE twice


def test_four_concurrent_tuners_and_exclusive_timing(env):
    shapes = ["100", "130", "77", "256"]
    procs = [subprocess.Popen(_tune_cmd("--shapes", s, "--trials", "3", "--space", "BLOCK=16,32,64,128", "mode=ok",
                                        *(["--workers", "2"] if i == 0 else [])),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
             for i, s in enumerate(shapes)]
    for p in procs:
        out, _ = p.communicate(timeout=170)
        assert p.returncode == 0, out[-3000:]
    studies = _studies(env)
    assert len(studies) == 4
    intervals = []
    for trials in studies.values():
        ran = [t for t in trials if t.user_attrs.get("ran")]
        assert len(ran) == 3 and all(t.state == S.COMPLETE for t in ran)  # every trial recorded
        intervals += [tuple(t.user_attrs["timing_interval"]) for t in ran]
    # One table with all 4 entries.
    tuning = os.path.join(env["TILEKIT_CACHE_DIR"], "tuning")
    [name] = [n for n in os.listdir(tuning) if n.endswith(".json")]
    data = table.read(os.path.join(tuning, name))
    assert sorted(e["shape"][0] for e in data["entries"]) == sorted(int(s) for s in shapes)
    # Timing is exclusive per device: no two timing intervals (4 tuners, one of them with 2 workers) overlap.
    intervals.sort()
    for (s0, e0), (s1, e1) in zip(intervals, intervals[1:]):
        assert e0 <= s1, f"timings overlap: [{s0}, {e0}] and [{s1}, {e1}]"


def _alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return False


def test_a_worker_whose_tuner_is_killed_dies_too(env):
    """A tuner killed with -9 while its candidate hangs: the worker (its own session, so the kill does not
    reach it) notices it was orphaned and ends itself, and with it the hang."""
    script = ("import sys\n"
              "from tilekit.autotune.worker import Worker\n"
              "w = Worker([sys.argv[1]]); w._start()\n"
              "print(w.process.pid, flush=True)\n"
              "req = {'kernel': 'faults.scale', 'shape': [64], 'dtype': 'float32', 'backend': 'reference',\n"
              "       'device': 'cpu', 'seed': 0, 'timing_lock': sys.argv[2], 'repeats': 2, 'warmup': 1,\n"
              "       'config': {'BLOCK': 16, 'mode': 'hang'}}\n"
              "w.run(req, 3600)\n")
    tuner = subprocess.Popen([sys.executable, "-c", script, FAULTS, os.path.join(env["TILEKIT_CACHE_DIR"], "lock")],
                             env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    worker_pid = int(tuner.stdout.readline())
    time.sleep(1)
    assert _alive(worker_pid)  # hung in the candidate's build
    _kill_tree(tuner)
    tuner.wait(10)
    deadline = time.monotonic() + 15
    while _alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(worker_pid), "the orphaned worker kept running"
