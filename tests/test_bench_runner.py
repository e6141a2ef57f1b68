"""The runner on an external KernelBench-style directory written here: correct and wrong candidates,
every failure mode (nothing written, NaN, abort, hang, out of memory, anti-cheat, broken files), and
the run going on after each."""
import json
import os
import textwrap

import pytest

from tilekit.bench.discovery import BenchInputError, discover_problems, resolve_candidates_dir
from tilekit.bench.runner import SuiteConfig, SuiteRunner

from bench_problems_text import PROBLEM


CANDIDATE_HEAD = '''
import os
import time
import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x, y):
'''

CANDIDATE_BODIES = {
    "correct": "return x + x + y",
    "wrong": "return x * self.scale - y",
    "writes_nothing": "return torch.empty_like(x)",
    "partial_write": "out = torch.empty_like(x)\n        out[:-1] = x[:-1] * self.scale + y[:-1]\n        return out",
    "nan": "out = x * self.scale + y\n        out[3, 5] = float('nan')\n        return out",
    "abort": "os.abort()",
    "hang": "time.sleep(3600)",
    "oom": "raise MemoryError('simulated allocation failure')",
    # Replaces torch.save in its own process, so the outputs file it hands back is junk.
    "tampers_outputs": "torch.save = lambda obj, path: open(path, 'w').write('junk')\n"
                       "        return x * self.scale + y",
    "cheat_fallback": "try:\n            return torch.ops.tilekit.add(x, y)\n        except Exception:\n"
                      "            return x * self.scale + y",
}

EXPECTED_STATUS = {
    "correct": "correct", "wrong": "incorrect", "writes_nothing": "incorrect", "partial_write": "incorrect",
    "nan": "incorrect", "abort": "crash", "hang": "timeout", "oom": "oom", "cheat_fallback": "anticheat",
    "tampers_outputs": "anticheat",
    "no_model_new": "error",
    "reference_only": "no_candidate", "broken_reference": "reference_error",
}


@pytest.fixture(scope="module")
def suite_report(tmp_path_factory):
    # The torch.compile baseline is exercised with compilation switched off (torch.compile then
    # returns the model unchanged): this checks the runner's plumbing without paying ~20 s of
    # cold Inductor compilation in CI.
    saved = os.environ.get("TORCH_COMPILE_DISABLE")
    os.environ["TORCH_COMPILE_DISABLE"] = "1"
    try:
        yield _run_suite(tmp_path_factory)
    finally:
        if saved is None:
            del os.environ["TORCH_COMPILE_DISABLE"]
        else:
            os.environ["TORCH_COMPILE_DISABLE"] = saved


def _run_suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernelbench")
    problems = root / "problems" / "level1"
    candidates = root / "candidates"
    problems.mkdir(parents=True)
    candidates.mkdir()
    for name, body in CANDIDATE_BODIES.items():
        (problems / f"{name}.py").write_text(PROBLEM)
        (candidates / f"{name}.py").write_text(CANDIDATE_HEAD + "        " + body + "\n")
    (problems / "no_model_new.py").write_text(PROBLEM)
    (candidates / "no_model_new.py").write_text("class Other:\n    pass\n")
    (problems / "reference_only.py").write_text(PROBLEM)
    (problems / "broken_reference.py").write_text(PROBLEM.replace("def get_inputs():\n",
                                                                   "def get_inputs():\n    raise RuntimeError('bad problem')\n"))
    (problems / "helpers.py").write_text("def util():\n    return 1\n")         # not a problem: skipped
    config = SuiteConfig(problems=discover_problems(str(root / "problems"), warn=lambda m: None),
                         candidates_dir=resolve_candidates_dir(str(candidates)), device="cpu", quick=True,
                         trials=5, timeout_s=4.0, compile_baseline=True, tilekit_candidates=False,
                         cpu_budget_s=0.05, cpu_threads=1, workdir=root / "work")
    report = SuiteRunner(config).run()
    return {row["name"]: row for row in report["results"]}, report


def test_every_problem_is_recorded_with_its_failure_mode(suite_report):
    rows, _ = suite_report
    assert "helpers" not in rows
    assert {name: row["status"] for name, row in rows.items()} == EXPECTED_STATUS


def test_correct_candidate_scores_correct_and_is_timed(suite_report):
    row = suite_report[0]["correct"]
    assert row["correct"] and row["failure"] == ""
    assert len(row["trials"]) == 5 and all(t["passed"] for t in row["trials"])
    assert len({t["seed"] for t in row["trials"]}) == 5                     # fresh inputs per trial
    assert row["trials"][0]["atol"] == 1e-4 and row["trials"][0]["rtol"] == 1e-4   # KernelBench fp32
    assert row["timing"]["candidate"]["clock"] == "cpu-wall"
    assert row["timing"]["candidate"]["median_ms"] > 0
    assert row["speedup_eager"] == pytest.approx(row["timing"]["reference_eager"]["median_ms"]
                                                 / row["timing"]["candidate"]["median_ms"])
    assert row["compile_error"] is None, row["compile_error"]
    assert row["compile_seconds"] >= 0
    assert row["speedup_compile"] == pytest.approx(row["timing"]["reference_compile"]["median_ms"]
                                                   / row["timing"]["candidate"]["median_ms"])
    # Only correct candidates get a compile baseline.
    assert all(r["speedup_compile"] is None for name, r in suite_report[0].items() if name != "correct")


def test_failures_name_their_cause(suite_report):
    rows, _ = suite_report
    assert "differ beyond atol=0.0001" in rows["wrong"]["failure"]
    assert rows["wrong"]["trials"][0]["max_abs_diff"] > 1.0
    assert "NaN" in rows["writes_nothing"]["failure"] and "1551 NaN of 1551" in rows["writes_nothing"]["failure"]
    assert "47 NaN of 1551" in rows["partial_write"]["failure"]              # the one unwritten row
    assert "1 NaN" in rows["nan"]["failure"]
    assert "SIGABRT" in rows["abort"]["failure"] and "trial 0" in rows["abort"]["failure"]
    assert "timed out after 4 s" in rows["hang"]["failure"]
    assert "simulated allocation failure" in rows["oom"]["failure"]
    assert "try/except" in rows["cheat_fallback"]["failure"]
    assert "(outputs: correct)" in rows["cheat_fallback"]["failure"] and not rows["cheat_fallback"]["correct"]
    # torch.save patched in its own process: seen in the source and at run time; the worker saved with the
    # torch.save it captured before the candidate was imported, so the outputs still arrived (and were right).
    assert "patches torch.save" in rows["tampers_outputs"]["failure"]
    assert "at run time: torch.save was replaced" in rows["tampers_outputs"]["failure"]
    assert "ModelNew" in rows["no_model_new"]["failure"]
    assert "bad problem" in rows["broken_reference"]["failure"]
    assert rows["reference_only"]["timing"]["reference_eager"]["median_ms"] > 0


def test_score_counts_only_problems_with_candidates(suite_report):
    _, report = suite_report
    summary = report["summary"]
    assert summary["problems"] == 13 and summary["scored"] == 11      # not reference_only / broken_reference
    assert summary["fast_p"]["0"] == pytest.approx(1 / 11)           # one correct candidate
    json.dumps(report)                                                # every number serialisable


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(BenchInputError, match="nonexistent_family"):
        discover_problems("nonexistent_family")
    with pytest.raises(BenchInputError, match="not a directory"):
        resolve_candidates_dir(str(tmp_path / "missing"))
    (tmp_path / "half.py").write_text("import torch\nclass Model:\n    pass\n")
    notes = []
    with pytest.raises(BenchInputError, match="no KernelBench problem files"):     # skipped, not an error
        discover_problems(str(tmp_path), warn=notes.append)
    assert "half.py" in notes[0] and "defines no get_inputs, get_init_inputs" in notes[0]
    with pytest.raises(BenchInputError, match=r"half\.py.*get_inputs, get_init_inputs"):   # named on its own: an error
        discover_problems(str(tmp_path / "half.py"))
    (tmp_path / "half.py").unlink()
    with pytest.raises(BenchInputError, match="no KernelBench problem files"):
        discover_problems(str(_empty_dir(tmp_path)))
    (tmp_path / "bad_variants.py").write_text(textwrap.dedent("""
        import torch
        VARIANTS = {"a": {"DTYPE": torch.float16}}
        class Model: pass
        def get_inputs(): return []
        def get_init_inputs(): return []
        """))
    with pytest.raises(BenchInputError, match="VARIANTS must be a literal"):
        discover_problems(str(tmp_path / "bad_variants.py"))


def _empty_dir(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty


def test_fresh_interpreter_isolation_records_failures_too(tmp_path):
    """The path used where fork is unavailable (or with --no-fork): one new interpreter per candidate."""
    problems, candidates = tmp_path / "problems", tmp_path / "candidates"
    problems.mkdir()
    candidates.mkdir()
    pid_file = tmp_path / "pid.txt"
    bodies = dict(CANDIDATE_BODIES, hang=(          # leaves a process in a new session, then hangs
        "import subprocess\n        child = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
        f"        open({str(pid_file)!r}, 'w').write(str(child.pid))\n        time.sleep(3600)"))
    for name in ("correct", "abort", "hang"):
        (problems / f"{name}.py").write_text(PROBLEM)
        (candidates / f"{name}.py").write_text(CANDIDATE_HEAD + "        " + bodies[name] + "\n")
    config = SuiteConfig(problems=discover_problems(str(problems), warn=lambda m: None),
                         candidates_dir=candidates, device="cpu", trials=2, timeout_s=3.0,
                         compile_baseline=False, tilekit_candidates=False, cpu_budget_s=0.02,
                         cpu_threads=1, fork_candidates=False)
    rows = {row["name"]: row for row in SuiteRunner(config).run()["results"]}
    assert {name: row["status"] for name, row in rows.items()} == {"correct": "correct", "abort": "crash",
                                                                    "hang": "timeout"}
    assert "SIGABRT" in rows["abort"]["failure"] and "timed out after 3 s" in rows["hang"]["failure"]
    # The timeout asked the job's reaper to kill everything the candidate started, setsid or not.
    assert not os.path.exists(f"/proc/{int(pid_file.read_text())}"), "the candidate's child survived its timeout"
