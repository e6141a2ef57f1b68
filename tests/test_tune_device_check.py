"""scripts/device_check.sh --dry-run on the CPU: every step runs (tiny sizes) and writes its JSON at once, so the
script is proven before any device time is spent on it."""
import json
import os
import pathlib
import subprocess
import sys


def test_device_check_dry_run_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, TILEKIT_CACHE_DIR=str(tmp_path / "cache"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run(["bash", "scripts/device_check.sh", "--dry-run", "--device", "cpu", "--budget-s", "150"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=200)
    assert run.returncode == 0, run.stderr[-2000:]
    results = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    families = {f"family_{p.stem}" for p in pathlib.Path(root, "scripts", "device_check.d").glob("*.sh")}
    assert {"gpu_tests", "tune_matmul", "bench"} | families <= set(results), sorted(results)
    assert len(results) <= 8  # what comes back from the device
    # pytest's 5 = no GPU-marked test in the files collected; anything else would be a broken step
    assert results["gpu_tests"]["rc"] in (0, 5) and "error" not in results["gpu_tests"]["tail"].lower()
    assert results["tune_matmul"]["rc"] == 0 and "dispatch table" in results["tune_matmul"]["tail"]
    assert results["bench"]["rc"] == 0, results["bench"]["tail"]
    for name in families:  # each family's own dry run works on the CPU
        assert results[name]["rc"] == 0, (name, results[name]["tail"])
    assert all(r["wall_s"] >= 0 and r["command"] for r in results.values())


def test_device_check_spends_no_more_than_its_budget(tmp_path):
    # With no budget left, every step is recorded as timed out (124) at once; the script still ends 0.
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, TILEKIT_CACHE_DIR=str(tmp_path / "cache"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run(["bash", "scripts/device_check.sh", "--dry-run", "--device", "cpu", "--budget-s", "0"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    results = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert results and all(r["rc"] == 124 and "no budget left" in r["tail"] for r in results)
