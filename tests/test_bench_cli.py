"""`tilekit bench` end to end, through `python -m tilekit.bench` in a subprocess."""
import json
import os
import subprocess
import sys

from tilekit.bench.cli import add_arguments, main

BLOCK_TILEKIT_OPS = """\
import sys
# As if tilekit's ops did not exist yet: `import tilekit.ops` raises ModuleNotFoundError.
sys.modules["tilekit.ops"] = None
"""


def run_bench(args, env_extra=None, timeout=240):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "tilekit.bench", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_default_quick_run_without_tilekit_ops_completes_and_writes_reports(tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(BLOCK_TILEKIT_OPS)
    pythonpath = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH")) if p)
    out = tmp_path / "out"
    done = run_bench(["--quick", "--json", str(out / "r.json"), "--report", str(out / "r.md"),
                      "--plot", str(out / "r.png"), "--cpu-budget", "0.05", "--cpu-threads", "1"],
                     env_extra={"PYTHONPATH": pythonpath})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "QUICK sizes" in done.stderr

    report = json.loads((out / "r.json").read_text())
    rows = report["results"]
    assert report["meta"]["quick"] and "QUICK" in report["meta"]["sizes"] and report["meta"]["clock"] == "cpu-wall"
    families = {r["family"] for r in rows}
    assert {"matmul", "softmax", "attention", "moe", "selective_scan", "lowbit_linear"} <= families
    assert not [r["id"] for r in rows if r["status"] == "reference_error"]
    for row in rows:
        assert row["timing"]["reference_eager"]["median_ms"] > 0, row["id"]
        # Every family has candidates; with the ops missing they fail to import: an error, not a crash of
        # the suite.
        assert row["status"] == "error" and "tilekit.ops" in row["failure"], row
    assert report["summary"]["fast_p"]["0"] == 0.0

    markdown = (out / "r.md").read_text()
    assert "| p | fast_p vs eager" in markdown and "attention/attention[gqa_causal_d128_bf16]" in markdown
    assert "import of tilekit.ops halted" in markdown  # the failure reason reaches the report
    assert (out / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_exit_2_naming_the_problem(tmp_path, capsys):
    assert main(["--problems", "no_such_family"]) == 2
    assert "no_such_family" in capsys.readouterr().err
    assert main(["--problems", str(tmp_path), "--candidates", "none"]) == 2
    assert "no KernelBench problem files" in capsys.readouterr().err
    assert main(["--candidates", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_list_and_argument_wiring(capsys):
    import argparse
    parser = add_arguments(argparse.ArgumentParser(prog="tilekit bench"))
    args = parser.parse_args([])
    assert args.quick is None and args.candidates == "tilekit" and args.compile_baseline and args.trials == 5
    assert parser.parse_args(["--full"]).quick is False
    assert main(["--list", "--problems", "matmul,softmax"]) == 0
    listing = capsys.readouterr().out
    assert "matmul/gemm[square_fp16]" in listing and "candidates/softmax/softmax.py" in listing
