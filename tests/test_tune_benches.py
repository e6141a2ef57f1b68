"""The tuner's benchmarks (bench/tune_efficiency.py, bench/tuned_vs_default.py) in --quick mode on tiny
shapes: structure and invariants only, never a speed claim. Plus the default-CPU-backend line in
`tilekit info` and in the bench report header."""
import json

import pytest
import torch

from tilekit.autotune.protocol import kernels
from tilekit.autotune.tuner import _config_key


def _opencl_or_skip():
    from tilekit.backends.opencl import available
    ok, why = available()
    if not ok:
        pytest.skip(f"OpenCL unavailable: {why}")


def test_tune_efficiency_quick_replays_every_sampler_within_the_space(tmp_path, capsys):
    _opencl_or_skip()
    from tilekit.bench import tune_efficiency
    out = tmp_path / "eff.json"
    assert tune_efficiency.main(["--quick", "--shape", "softmax=8,64", "--seeds", "5", "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())
    kernel = kernels()[result["kernel"]]
    timed = {k: v for k, v in result["table"].items() if v is not None}
    assert result["valid"] == len(result["table"]) >= 2 and timed
    for key in result["table"]:  # only valid configs were measured
        assert kernel.why_invalid(json.loads(key), torch.float32) is None
    assert result["best_s"] == min(timed.values())
    assert _config_key(result["best_config"]) in timed and timed[_config_key(result["best_config"])] == result["best_s"]
    assert set(result["samplers"]) == {"tpe", "random", "grid"}
    for row in result["samplers"].values():
        assert len(row["per_seed"]) == 5
        assert all(c is None or 1 <= c <= result["valid"] for c in row["per_seed"])
        assert 1 <= row["mean"] <= result["valid"] and 0 < row["fraction"] <= 1
    # grid visits every config of the space, so it always reaches the best
    assert result["samplers"]["grid"]["not_reached"] == 0
    text = capsys.readouterr().out
    assert "trials to 5%" in text and ("PASS" in text or "MISS" in text)
    assert "fixed subset" in text


def test_tune_efficiency_replays_a_saved_table_on_its_fixed_subset(tmp_path, capsys):
    """--replay --subset keeps only the subset's part of a saved whole-space table; a table lacking part of
    the subset is refused. The times are synthetic (the replay is deterministic on any table)."""
    import dataclasses
    import random
    from tilekit.autotune.tuner import TuneJob
    from tilekit.bench import tune_efficiency as te
    job = TuneJob(kernel=kernels()["softmax.forward"], shape=(256, 1000), backend="opencl")
    space = te.job_space(job)
    rng = random.Random(5)
    table = {_config_key(c): rng.uniform(1e-3, 1e-2) for c in te.valid_configs(job, space)}
    saved = tmp_path / "eff.json"
    saved.write_text(json.dumps([{"kernel": job.kernel.id, "shape": list(job.shape), "space": space,
                                  "table": table}]))
    assert te.main(["--replay", str(saved), "--seeds", "2", "--subset"]) == 0
    subset = te.job_space(dataclasses.replace(job, space=te.FULL_SUBSETS[job.kernel.id]))
    n_subset = len(te.valid_configs(job, subset))
    assert 0 < n_subset < len(table)
    text = capsys.readouterr().out
    assert f"{n_subset} valid configs measured (fixed subset" in text
    best = min(v for k, v in table.items() if k in {_config_key(c) for c in te.valid_configs(job, subset)})
    assert f"best {best * 1e3:.4f} ms" in text
    assert te.main(["--replay", str(saved), "--seeds", "2"]) == 0
    assert f"{len(table)} valid configs measured (the whole valid space" in capsys.readouterr().out
    del table[next(k for k in table if json.loads(k)["BN"] == 1024)]
    saved.write_text(json.dumps([{"kernel": job.kernel.id, "shape": list(job.shape), "space": space,
                                  "table": table}]))
    with pytest.raises(SystemExit, match="lacks 1 configs of the subset"):
        te.main(["--replay", str(saved), "--seeds", "2", "--subset"])


def test_tuned_vs_default_quick_measures_both_configs(tmp_path, capsys):
    _opencl_or_skip()
    from tilekit.bench import tuned_vs_default
    out = tmp_path / "tvd.json"
    assert tuned_vs_default.main(["--quick", "--shape", "softmax=8,64", "--trials", "2", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    kernel = kernels()[row["kernel"]]
    assert row["shape"] == [8, 64] and 1 <= row["trials"] <= 2
    assert kernel.why_invalid(row["tuned_config"], torch.float32) is None
    assert row["default_s"] > 0 and row["tuned_s"] > 0 and row["speedup"] > 0
    assert row["table_gives_tuned"]  # the temporary table was written and the lookup reads it back
    assert "speedup" in capsys.readouterr().out


def test_info_and_bench_header_name_the_default_cpu_backend(capsys):
    from tilekit.backends import default_backend
    from tilekit.bench import report
    from tilekit.cli import main
    cpu_default = default_backend(torch.device("cpu"))
    assert main(["info"]) == 0
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("ops on CPU tensors use")]
    assert len(line) == 1 and f" {cpu_default} " in line[0] and "docs/tune.md" in line[0]
    meta = {"device": "cpu", "device_name": "test CPU", "torch": "x", "sizes": "s", "clock": "cpu-wall",
            "timing_protocol": "median", "trials": 2, "poison": True, "precision": None, "policy": "strict"}
    header = report.header_lines(meta)
    assert f"ops on CPU tensors use {cpu_default} (" in "\n".join(header)


def test_the_bench_header_names_the_backend_the_ops_env_chooses(monkeypatch):
    """With TILEKIT_OPS_BACKEND set the ops run there, and the header must say so (it used to name the default)."""
    from tilekit.backends import OPS_BACKEND_ENV, cpu_default_line, default_backend
    import tilekit.ops
    other = next(b for b in ("opencl", "triton") if b != default_backend(torch.device("cpu")))
    monkeypatch.setenv(OPS_BACKEND_ENV, other)
    assert tilekit.ops.backend_for(torch.device("cpu")) == other
    assert cpu_default_line().startswith(f"ops on CPU tensors use {other} (${OPS_BACKEND_ENV};")


def test_host_overhead_prints_every_row_against_its_floor(capsys):
    """A smoke run (few calls: the numbers mean nothing here, the bench's job is printing them side by side)."""
    from tilekit.backends.triton import launch_unavailable_reason
    if launch_unavailable_reason():
        pytest.skip(launch_unavailable_reason())
    from tilekit.bench import host_overhead
    from tilekit.bench.abstraction_cost import tk_matmul
    # an earlier test may have left another backend's variant in the kernel's cache (CI's order did: CUDA)
    tk_matmul.source("cuda", torch.randn(64, 64), torch.randn(64, 64), torch.empty(64, 64))
    assert host_overhead.main(["--calls", "60"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("  matmul,") or line.startswith("  softmax,")]
    assert len(rows) == 5, out
    for line in rows:
        best, median, floor, ratio = (float(x) for x in line[30:].split()[:4])
        assert 0 < best <= median and floor > 0 and abs(ratio - best / floor) < 0.01 + 0.01 * ratio, line
    assert "a table entry" in out and "custom-op dispatch alone" in out
    from tilekit.ops.matmul.kernels import matmul_kernel  # the op's kernel was stubbed, and is put back
    assert not any(type(getattr(ck, "_jit", None)).__name__ == "_NoLaunch" for ck in matmul_kernel._cache.values())


def test_host_overhead_times_the_exact_launch_path(monkeypatch):
    """The warm rows must time what a repeated call takes (the exact launcher), not the key path: a call
    of what ``warm_launch`` returns builds no launch key."""
    from tilekit.backends.triton import launch_unavailable_reason
    if launch_unavailable_reason():
        pytest.skip(launch_unavailable_reason())
    import tilekit as tk
    from tilekit.bench import host_overhead
    from tilekit.bench.abstraction_cost import tk_matmul
    from tilekit.kernel import Kernel
    k = Kernel(tk_matmul.fn)
    a, b, c = torch.randn(40, 24), torch.randn(24, 16), torch.empty(40, 16)
    try:
        call = host_overhead.warm_launch(k, (a, b, c), lambda meta: (tk.cdiv(40, meta["BM"]), tk.cdiv(16, meta["BN"])))
    finally:
        host_overhead._STUBBED.clear()  # k is this test's own kernel: nothing to put back

    def no_key(*args, **kwargs):
        raise AssertionError("the timed call built a launch key")
    monkeypatch.setattr(k, "launch_key", no_key)
    call()
