"""Cheats that once scored correct and fast, each caught at run time, next to plain correct
candidates that still score correct. One suite run (through the CLI, in this process) serves all."""
import json
import os
import time

import pytest
import torch

from tilekit.bench import integrity
from tilekit.bench.cli import main

from bench_problems_text import PROBLEM


MATMUL_PROBLEM = '''
import torch
import torch.nn as nn

M, K, N = 33, 47, 29


class Model(nn.Module):
    def forward(self, a, b):
        return torch.matmul(a, b)


def get_inputs():
    return [torch.randn(M, K), torch.randn(K, N)]


def get_init_inputs():
    return []
'''

HEAD = '''
import os
import signal
import subprocess
import sys
import time

import torch
import torch.nn as nn
'''

# Imports a helper from its own folder: what the helper does is out of the static check's sight.
HIDDEN_IMPORT = '''
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import {helper}  # noqa: E402,F401
'''

PLAIN = '''
class ModelNew(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x, y):
        return x * self.scale + y
'''

CANDIDATES = {
    "correct": PLAIN,
    # Memoised on the inputs' identity and version, 4 slots; the cached inputs stay alive so that
    # fresh trial tensors get fresh ids. Timing reused one input tensor: every timed call was a hit.
    "memo": '''
class ModelNew(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale
        self.cache = {}

    def forward(self, x, y):
        key = (id(x), x._version, id(y), y._version)
        if key not in self.cache:
            if len(self.cache) >= 4:
                self.cache.pop(next(iter(self.cache)))
            self.cache[key] = (x, y, x * self.scale + y)
        return self.cache[key][2]
''',
    # Legitimate: one preallocated output buffer, rewritten by every call.
    "prealloc": '''
class ModelNew(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale
        self.out = None

    def forward(self, x, y):
        if self.out is None or self.out.shape != x.shape:
            self.out = torch.empty_like(x)
        torch.mul(x, self.scale, out=self.out)
        self.out.add_(y)
        return self.out
''',
    "stats_static": "import statistics\nstatistics.median = lambda data: 1e-6\n" + PLAIN,
    "stats_hidden": HIDDEN_IMPORT.format(helper="cheat_patch_timing") + PLAIN,
    # Processes that would outlive the candidate: one in its group, one in a new session, and a
    # double-forked daemon that overwrites the suite's results after the suite has ended.
    "spawner": '''
class ModelNew(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale
        pids = os.environ["TILEKIT_BENCH_TEST_PIDS"]
        same_group = subprocess.Popen(["sleep", "60"])
        new_session = subprocess.Popen(["sleep", "60"], start_new_session=True)
        first = os.fork()
        if first == 0:
            os.setsid()
            daemon = os.fork()
            if daemon == 0:
                time.sleep(1.0)
                with open(os.environ["TILEKIT_BENCH_TEST_RESULTS"], "w") as handle:
                    handle.write("{}")
                os._exit(0)
            with open(pids, "a") as handle:
                handle.write(f"{daemon}\\n")
            os._exit(0)
        os.waitpid(first, 0)
        with open(pids, "a") as handle:
            handle.write(f"{same_group.pid}\\n{new_session.pid}\\n")

    def forward(self, x, y):
        return x * self.scale + y
''',
    "zz_kills_server": PLAIN.replace("return x * self.scale + y",
                                  "os.kill(os.getppid(), signal.SIGKILL)\n        time.sleep(30)\n"
                                  "        return x * self.scale + y"),
}

MATMUL_CANDIDATES = {
    "mm_tilekit": '''
import tilekit.ops  # noqa: F401


class ModelNew(nn.Module):
    def forward(self, a, b):
        return torch.ops.tilekit.matmul(a, b)
''',
    "mm_reregistered": HIDDEN_IMPORT.format(helper="cheat_reregister") + '''

class ModelNew(nn.Module):
    def forward(self, a, b):
        return torch.ops.tilekit.matmul(a, b)
''',
}

HELPERS = {
    "cheat_patch_timing.py": '''
import statistics
import time

statistics.median = lambda data: 1e-6
_clock = time.perf_counter
time.perf_counter = lambda: _clock() * 0.01
''',
    "cheat_reregister.py": '''
import torch
import tilekit.ops  # noqa: F401

LIB = torch.library.Library("tilekit", "IMPL")
LIB.impl("matmul", lambda a, b: torch.mm(a, b), "CPU")
''',
}

EXPECTED = {
    "correct": "correct", "memo": "incorrect", "prealloc": "correct", "stats_static": "anticheat",
    "stats_hidden": "anticheat", "spawner": "correct", "zz_kills_server": "crash",
    "mm_tilekit": "correct", "mm_reregistered": "anticheat", "needs_missing_module": "reference_error",
}


@pytest.fixture(scope="module")
def cheat_suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("cheats")
    problems, candidates = root / "problems", root / "candidates"
    problems.mkdir()
    candidates.mkdir()
    for name, body in CANDIDATES.items():
        (problems / f"{name}.py").write_text(PROBLEM)
        (candidates / f"{name}.py").write_text(HEAD + body)
    for name, body in MATMUL_CANDIDATES.items():
        (problems / f"{name}.py").write_text(MATMUL_PROBLEM)
        (candidates / f"{name}.py").write_text(HEAD + body)
    for name, body in HELPERS.items():
        (candidates / name).write_text(body)
    (problems / "needs_missing_module.py").write_text("import tilekit_bench_no_such_module\n" + PROBLEM)
    results, pids = root / "results.json", root / "pids.txt"
    pids.write_text("")
    os.environ["TILEKIT_BENCH_TEST_PIDS"], os.environ["TILEKIT_BENCH_TEST_RESULTS"] = str(pids), str(results)
    try:
        code = main(["--problems", str(problems), "--candidates", str(candidates), "--json", str(results),
                     "--no-compile", "--trials", "3", "--cpu-budget", "0.05", "--timeout", "20", "--no-progress"])
    finally:
        del os.environ["TILEKIT_BENCH_TEST_PIDS"], os.environ["TILEKIT_BENCH_TEST_RESULTS"]
    finished = time.monotonic()
    assert code == 0
    return {"rows": {r["name"]: r for r in json.loads(results.read_text())["results"]}, "results": results,
            "pids": [int(p) for p in pids.read_text().split()], "finished": finished}


def test_each_cheat_is_caught_and_plain_candidates_stay_correct(cheat_suite):
    assert {name: row["status"] for name, row in cheat_suite["rows"].items()} == EXPECTED


def test_memoised_results_are_caught_by_the_checked_timed_call(cheat_suite):
    row = cheat_suite["rows"]["memo"]
    assert all(t["passed"] for t in row["trials"])                    # fresh tensors per trial: no hits
    assert "timed call" in row["failure"] and "refilled in place" in row["failure"], row["failure"]
    assert not row["timing_check"]["passed"]
    correct = cheat_suite["rows"]["correct"]
    assert correct["timing_check"]["passed"] and correct["timing_check"]["runs"] >= 3


def test_reused_output_buffer_is_copied_per_call(cheat_suite):
    row = cheat_suite["rows"]["prealloc"]
    assert row["correct"] and len(row["trials"]) == 3 and row["timing_check"]["passed"]


def test_timing_machinery_patches_are_cheats_and_change_nothing(cheat_suite):
    static, hidden = cheat_suite["rows"]["stats_static"], cheat_suite["rows"]["stats_hidden"]
    assert "patches statistics.median" in static["failure"]
    assert "statistics.median was replaced" in hidden["failure"]
    assert "time.perf_counter was replaced" in hidden["failure"]
    assert not hidden["correct"] and hidden["speedup_eager"] is None
    # The samples were taken with the clock bound before the candidate ran, summarised here.
    plain = cheat_suite["rows"]["correct"]["timing"]["candidate"]["median_ms"]
    assert hidden["timing"]["candidate"]["median_ms"] > plain / 20


def test_tilekit_registrations_must_be_tilekits_own(cheat_suite):
    assert cheat_suite["rows"]["mm_tilekit"]["correct"], cheat_suite["rows"]["mm_tilekit"]["failure"]
    failure = cheat_suite["rows"]["mm_reregistered"]["failure"]
    assert "torch.ops.tilekit.matmul is no longer tilekit's own" in failure and "CPU" in failure, failure


def test_no_process_outlives_its_candidate_and_results_stay_the_parents(cheat_suite):
    assert len(cheat_suite["pids"]) == 3
    for pid in cheat_suite["pids"]:
        assert not os.path.exists(f"/proc/{pid}") or _state(pid) == "Z", f"process {pid} survived the suite"
    time.sleep(max(0.0, 1.5 - (time.monotonic() - cheat_suite["finished"])))
    report = json.loads(cheat_suite["results"].read_text())
    assert len(report["results"]) == len(EXPECTED)                   # not the daemon's "{}"


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_a_killed_fork_server_names_the_stage(cheat_suite):
    failure = cheat_suite["rows"]["zz_kills_server"]["failure"]
    assert "fork server died" in failure and "(during trial 0)" in failure, failure


def test_missing_module_names_an_install_hint(cheat_suite):
    failure = cheat_suite["rows"]["needs_missing_module"]["failure"]
    assert "No module named 'tilekit_bench_no_such_module'" in failure
    assert "pip install tilekit_bench_no_such_module" in failure


def test_snapshot_sees_a_re_registered_tilekit_kernel_in_this_process():
    import tilekit.ops  # noqa: F401
    snapshot = integrity.Snapshot()
    assert snapshot.changes() == []
    library = torch.library.Library("tilekit", "IMPL")
    try:
        library.impl("matmul", lambda a, b: torch.mm(a, b), "CPU")
        changes = snapshot.changes()
        assert len(changes) == 1 and "torch.ops.tilekit.matmul is no longer tilekit's own" in changes[0], changes
    finally:
        library._destroy()
    assert snapshot.changes() == []


def test_snapshot_sees_patched_timing_functions(monkeypatch):
    import statistics
    snapshot = integrity.Snapshot()
    monkeypatch.setattr(statistics, "median", lambda data: 0.0)
    monkeypatch.setattr(torch.Tensor, "copy_", lambda self, other: self)
    changes = "\n".join(snapshot.changes())
    assert "statistics.median was replaced" in changes and "torch.Tensor.copy_ was replaced" in changes
    monkeypatch.undo()
    assert snapshot.changes() == []


def test_patching_tilekit_code_is_seen(monkeypatch):
    import tilekit.bench.timing as timing
    snapshot = integrity.Snapshot()
    monkeypatch.setattr(timing, "time_cpu", lambda *a, **k: None)
    assert any("tilekit.bench.timing.time_cpu" in c for c in snapshot.changes())
    monkeypatch.undo()
    assert snapshot.changes() == []
