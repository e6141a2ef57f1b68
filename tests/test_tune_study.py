"""The tuner end to end: a real PoCL tuning run for matmul whose winner the op then launches; every failure
mode (crash, hang, wrong, invalid) recorded while the study goes on; the CLI's summary, plain progress lines,
cache export/import. Budgets stay tiny: <= 8 trials, shapes <= 128, hang timeout 4 s."""
import json
import os
import time

import optuna
import pytest
import torch

import tilekit.ops as tk_ops
from tilekit.autotune import lookup, table
from tilekit.autotune.protocol import kernels
from tilekit.autotune.tuner import TuneJob, open_storage, tune
from tilekit.cli import main
from tilekit.ops.matmul import op as matmul_op

FAULTS = os.path.join(os.path.dirname(__file__), "tune_faults.py")


pytestmark = pytest.mark.usefixtures("fresh_tuning_cache")


def _trials(study_name):
    return optuna.load_study(study_name=study_name, storage=open_storage(None)).trials


def _opencl_or_skip():
    from tilekit.backends.opencl import available
    ok, why = available()
    if not ok:
        pytest.skip(f"OpenCL unavailable: {why}")


def test_pocl_tuning_run_writes_the_table_and_the_op_launches_the_winner(monkeypatch, capsys):
    _opencl_or_skip()
    shape = (48, 40, 24)  # M, N, K: ragged
    rc = main(["tune", "matmul", "--shapes", ",".join(map(str, shape)), "--backend", "opencl", "--trials", "4",
               "--space", "BM=16,32", "BN=16,32", "BK=16", "num_warps=2,4", "num_stages=1",
               "--sampler", "tpe", "--repeats", "3"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "matmul.main" in out and "speedup" in out          # the summary table
    assert "trial 4/4" in err and "\x1b[" not in err           # plain progress lines without a TTY
    [(path, data)] = table.all_tables()
    [entry] = data["entries"]
    assert entry["kernel"] == "matmul.main" and entry["shape"] == list(shape)
    assert data["device"]["backend"] == "opencl"
    assert entry["tuned_s"] <= entry["default_s"]              # the default is trial 0 and re-timed with the top 3
    assert entry["kernel_hash"] == matmul_op.matmul_kernel.source_hash
    trials = _trials(entry["study"])
    assert trials[0].user_attrs.get("default") and trials[0].user_attrs["config"] == entry["default_config"]
    assert sum(1 for t in trials if t.user_attrs.get("ran")) == 4
    # The op under use_backend("opencl") launches the recorded config.
    seen = []
    real = matmul_op.launch_args
    monkeypatch.setattr(matmul_op, "launch_args", lambda i, o, c: (seen.append(dict(c)), real(i, o, c))[1])
    a, b = torch.randn(shape[0], shape[2]), torch.randn(shape[2], shape[1])
    with tk_ops.use_backend("opencl"):
        c = torch.ops.tilekit.matmul(a, b)
    torch.testing.assert_close(c, a @ b, atol=1e-4, rtol=1e-4)
    assert seen == [entry["config"]]


def test_every_failure_mode_is_a_failed_or_pruned_trial_and_the_study_goes_on():
    k = kernels([FAULTS])["faults.scale"]
    job = TuneJob(k, (100,), backend="reference", trials=5, sampler="grid", trial_timeout=4, repeats=3,
                  final_repeats=3, space={"BLOCK": [16], "mode": ["ok", "crash", "hang", "wrong", "invalid"]},
                  extra_modules=(FAULTS,), write_table=False)
    result = tune(job, progress=False)
    by_mode = {t.user_attrs["config"]["mode"]: t for t in _trials(result.study_name)
               if "duplicate" not in t.user_attrs.get("reason", "")}
    assert set(by_mode) == {"ok", "crash", "hang", "wrong", "invalid"}
    S = optuna.trial.TrialState
    assert by_mode["ok"].state == S.COMPLETE
    assert by_mode["crash"].state == S.FAIL and "SIGABRT" in by_mode["crash"].user_attrs["reason"]
    assert by_mode["hang"].state == S.FAIL
    assert "hung in build (inputs, compile, first launch)" in by_mode["hang"].user_attrs["reason"]
    assert by_mode["wrong"].state == S.FAIL and "max error 3" in by_mode["wrong"].user_attrs["reason"]
    assert by_mode["wrong"].user_attrs["max_error"] > 1
    assert by_mode["invalid"].state == S.PRUNED and "refused by the rule" in by_mode["invalid"].user_attrs["reason"]
    assert "ran" not in by_mode["invalid"].user_attrs                 # pruned statically: no run
    assert result.config == {"BLOCK": 16, "mode": "ok"} and result.failed == 3 and result.timed == 4
    # Trial attributes are plain JSON values.
    for t in _trials(result.study_name):
        json.dumps(t.user_attrs)


def test_waiting_for_the_device_lock_is_not_charged_to_the_trial_timeout(tmp_path):
    """Another tuner timing on the device holds its lock: a candidate waiting for it longer than its trial
    timeout is not a hang, and the timing that follows gets a timeout of its own."""
    import subprocess
    import sys
    from tilekit.autotune.worker import Worker
    lock = str(tmp_path / "device.lock")
    request = {"kernel": "matmul.main", "shape": [24, 20, 12], "dtype": "float32", "backend": "reference",
               "device": "cpu", "seed": 0, "timing_lock": lock, "repeats": 2, "warmup": 1,
               "config": {"BM": 16, "BN": 16, "BK": 16, "num_warps": 2, "num_stages": 1}}
    worker = Worker()
    try:
        worker.run({**request, "gate_only": True}, 60)  # started and warm: the next build is quick
        holder = subprocess.Popen(  # another tuner's worker, timing for 5 s
            [sys.executable, "-c", "import sys, time; from filelock import FileLock\n"
             "with FileLock(sys.argv[1]):\n    print('held', flush=True); time.sleep(5)", lock],
            stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "held"
        held = time.time()
        answer = worker.run(request, 3)
        holder.wait(30)
    finally:
        worker.stop()
    assert answer["status"] == "ok", answer
    assert answer["interval"][0] >= held + 4.5  # it waited out the holder's 5 s, past its own 3 s timeout


def test_cache_export_import_and_a_foreign_device(tmp_path, capsys):
    from tilekit.autotune.device import fingerprint
    fp = fingerprint("reference")
    k = kernels()["matmul.main"]
    entry = {"kernel": "matmul.main", "dtype": "float32", "shape": [8, 8, 8], "bucket": [8, 8, 8], "flags": {},
             "config": {"BM": 16, "BN": 16, "BK": 16, "num_warps": 2, "num_stages": 1}, "tuned_s": 1e-3,
             "default_s": 1e-3, "trials": 1, "study": "s", "kernel_hash": k.kernel.source_hash,
             "tilekit": fp["tilekit"], "driver": fp["driver"], "runtime": fp["runtime"]}
    table.upsert(table.table_path(fp), fp, entry)
    export = tmp_path / "tables.json"
    assert main(["cache", "export", str(export)]) == 0
    assert main(["cache", "clear"]) == 0
    assert table.all_tables() == []
    assert main(["cache", "import", str(export)]) == 0
    assert main(["cache", "show", "matmul"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 3)[-1] or "[]") is not None
    # A table of another device: refused with exit 2 and the reason, unless --force.
    data = json.loads(export.read_text())
    data["tables"][0]["device"]["device"] = "A GPU far away"
    export.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["cache", "import", str(export)]) == 2
    assert "not a device of this machine" in capsys.readouterr().err
    assert main(["cache", "import", str(export), "--force"]) == 0
    assert len(table.all_tables()) == 2


def test_a_launch_option_the_backend_ignores_is_not_searched():
    """num_stages changes nothing outside Triton: on OpenCL the space keeps only the default's value (each
    other candidate would time the same kernel again); on Triton every candidate stays."""
    from tilekit.autotune.tuner import search_space
    mm = kernels()["matmul.main"]
    declared = mm.tunables.space["num_stages"]
    assert len(declared) > 1
    opencl = search_space(TuneJob(mm, (96, 80, 72), backend="opencl"))
    triton = search_space(TuneJob(mm, (96, 80, 72), backend="triton"))
    default = mm.default_config((96, 80, 72), torch.float32, torch.device("cpu"))
    assert opencl["num_stages"] == [default["num_stages"]]
    assert triton["num_stages"] == list(declared)
    assert opencl["BM"] == triton["BM"] == list(mm.tunables.space["BM"])


def test_tpe_walks_numeric_candidates_by_index_and_enqueues_the_default_exactly():
    """TPE sees BM=64 between 32 and 128 (an index into the sorted candidates), a string as a category;
    params_of inverts suggest, so the enqueued trial 0 is exactly the default config."""
    import optuna
    from tilekit.autotune.tuner import params_of, suggest
    space = {"BM": [16, 32, 64, 128], "num_warps": [2, 4, 8], "mode": ["a", "b"]}
    default = {"BM": 64, "num_warps": 2, "mode": "b"}
    for name in ("tpe", "cmaes", "random", "grid"):
        params = params_of(default, space, name)
        if name == "tpe":
            assert params == {"BM#index": 2, "num_warps#index": 0, "mode": "b"}
        if name in ("random", "grid"):
            assert params == default
        if name == "cmaes":
            continue  # CMA-ES refuses the categorical mode (tested below)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        study.enqueue_trial(params)
        first = suggest(study.ask(), space, name)
        assert first == default, name
        others = [suggest(study.ask(), space, name) for _ in range(20)]
        assert all(c[k] in space[k] for c in others for k in space)
        assert len({json.dumps(c, sort_keys=True) for c in others}) > 5  # it does explore


def test_cmaes_searches_a_numeric_space_and_refuses_a_categorical_one():
    mm = kernels()["matmul.main"]
    space = {"BM": [16, 32], "BN": [16, 32], "BK": [16], "num_warps": [2, 4]}
    job = TuneJob(mm, (40, 24, 32), backend="reference", trials=4, sampler="cmaes", trial_timeout=30,
                  repeats=2, final_repeats=2, space=space, write_table=False)
    result = tune(job, progress=False)
    trials = _trials(result.study_name)
    assert sum(1 for t in trials if t.user_attrs.get("ran")) == 4
    assert all(t.params and all(p.endswith("#index") for p in t.params) for t in trials)  # CMA-ES walks indices
    # the narrowed space plus the default's values (trial 0 is always the default)
    default = mm.default_config((40, 24, 32), torch.float32, torch.device("cpu"))
    allowed = {k: set(v) | {default[k]} for k, v in space.items()}
    searched = [t.user_attrs["config"] for t in trials if not t.user_attrs.get("default")]
    assert len(searched) == 3 and all(c[k] in allowed[k] for c in searched for k in space)
    faults = kernels([FAULTS])["faults.scale"]
    with pytest.raises(ValueError, match="numeric parameters only; mode"):
        tune(TuneJob(faults, (100,), backend="reference", trials=2, sampler="cmaes", extra_modules=(FAULTS,),
                     write_table=False), progress=False)
