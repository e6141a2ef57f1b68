"""Both ends of every toolchain range in pyproject.toml.

* The high end is this run: a fresh ``scripts/setup.sh`` installs the newest release each range allows,
  and ``test_installed_toolchain_is_in_range`` checks that what is installed is inside the ranges.
* The low end: ``test_low_end_toolchain`` builds a venv holding the lowest release series of each toolchain
  package (``name==X.Y.*`` for pyproject's ``name>=X.Y``), sharing everything else (torch, tilekit) with
  this interpreter, and runs ``LOW_END_TESTS`` in it: Triton AOT compiles for sm_80/sm_90/gfx90a/gfx942 of
  the corpus and the matmul (the generated Triton at triton 3.6), NVRTC + cuobjdump/nvdisasm SASS, PoCL
  through the oldest pyopencl, and Optuna's API. The venv is cached under ``$TILEKIT_CI_CACHE`` (default
  ``~/.cache/tilekit-ci``), keyed by the pins, so only a range change rebuilds it.
"""
import hashlib
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLCHAIN = ("triton", "cuda-bindings", "nvidia-cuda-nvrtc", "nvidia-cuda-cuobjdump", "nvidia-cuda-nvdisasm",
             "pyopencl", "pocl-binary-distribution", "optuna")
LOW_END_TESTS = [
    "tests/test_aot.py",
    "tests/test_aot_signatures.py::test_large_span_is_part_of_the_specialization",
    "tests/test_aot_signatures.py::test_large_tensors_index_in_64_bits",
    "tests/test_aot_signatures.py::test_compile_from_signature_strings",
    "tests/test_nvrtc_compile.py::test_default_matmul_uses_tensor_cores_without_spills",
    "tests/test_nvrtc_compile.py::test_bf16_matmul_uses_tensor_cores",
    "tests/test_nvrtc_compile.py::test_a_cuobjdump_without_nvdisasm_beside_it_is_given_one",
    "tests/test_opencl_regressions.py",
    "tests/test_backend_errors.py", "tests/test_backends_registry.py",
    "tests/test_toolchain_range.py::test_optuna_api_the_autotuner_uses",
    "tests/test_toolchain_range.py::test_installed_toolchain_is_in_range",
]
LOW_END = os.environ.get("TILEKIT_TOOLCHAIN_END") == "low"  # set inside the low-end venv


def toolchain_ranges():
    """{package: (lowest version, cap)} for every toolchain package, from pyproject.toml."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    reqs = list(project["dependencies"]) + [r for group in project["optional-dependencies"].values() for r in group]
    out = {}
    for r in reqs:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)\s*,\s*<\s*([0-9.]+)", r.strip())
        if m and m.group(1) in TOOLCHAIN:
            out[m.group(1)] = (m.group(2), m.group(3))
    return out


def _as_tuple(v):
    return tuple(int(x) for x in re.findall(r"\d+", v))


def test_every_toolchain_package_has_a_range():
    ranges = toolchain_ranges()
    assert set(ranges) == set(TOOLCHAIN), f"no `>=low,<cap` range for {sorted(set(TOOLCHAIN) - set(ranges))}"
    for name, (low, cap) in ranges.items():
        assert _as_tuple(low) < _as_tuple(cap), name


def test_installed_toolchain_is_in_range():
    for name, (low, cap) in toolchain_ranges().items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # an extra that is not installed here; the low-end venv installs every one
        v = _as_tuple(have)[:len(_as_tuple(low))]
        assert _as_tuple(low) <= _as_tuple(have) and _as_tuple(have) < _as_tuple(cap), f"{name} {have}"
        if LOW_END:  # the low-end venv really holds the lowest series
            assert v == _as_tuple(low), f"{name} {have} is not the low end {low}"


def low_end_pins():
    return [f"{name}=={low}.*" for name, (low, _) in sorted(toolchain_ranges().items())]


@pytest.fixture(scope="session")
def low_end_python(tmp_path_factory):
    pins = low_end_pins()
    key = hashlib.sha256(f"2|{sys.version}|{sys.prefix}|{pins}".encode()).hexdigest()[:12]  # 2: the recipe
    base = Path(os.environ.get("TILEKIT_CI_CACHE") or Path.home() / ".cache" / "tilekit-ci")
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError:  # no writable home: build it for this session only
        base = tmp_path_factory.mktemp("tilekit-ci")
    venv = base / f"toolchain-low-{key}"
    python = venv / "bin" / "python"
    done = venv / "tilekit-ready"
    if not done.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", "--system-site-packages", str(venv)], check=True,
                       timeout=300)
        # This interpreter's own site folders (a venv's, the editable tilekit's finder) after the venv's:
        # the pins shadow what is installed here, everything else is shared.
        import site
        dirs = [d for d in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(d)]
        site_dir = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip()
        Path(site_dir, "_tilekit_parent_site.pth").write_text(
            "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs) + "\n")
        # Then again, each pin copied into the venv even where the shared site already satisfies it:
        # pocl-binary-distribution installs its ICD file inside pyopencl's folder, which must be the venv's.
        for extra in ([], ["--no-deps", "--ignore-installed"]):
            r = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *extra,
                                *pins], capture_output=True, text=True, timeout=1800)
            assert r.returncode == 0, f"pip install {' '.join(pins)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        done.write_text("\n".join(pins) + "\n")
    return str(python)


@pytest.mark.skipif(LOW_END, reason="already inside the low-end venv")
def test_low_end_toolchain(low_end_python, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TILEKIT_TOOLCHAIN_END="low", TILEKIT_CACHE_DIR=str(tmp_path / "cache"), CI="true")
    r = subprocess.run([low_end_python, "-c", "import tilekit, tilekit.backends, triton; "
                        "print(tilekit.__file__, tilekit.backends.__file__, triton.__version__)"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    tk_file, backends_file, triton_version = r.stdout.split()
    assert Path(tk_file).resolve().parent == ROOT / "tilekit", f"the low-end venv imports another tilekit: {tk_file}"
    assert Path(backends_file).resolve().parent == ROOT / "backends", backends_file
    assert triton_version.startswith(toolchain_ranges()["triton"][0])
    r = subprocess.run([low_end_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *LOW_END_TESTS],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    assert r.returncode == 0, f"the low-end toolchain ({' '.join(low_end_pins())}) fails:\n{r.stdout[-6000:]}"
    assert " passed" in r.stdout.splitlines()[-1] and "skipped" not in r.stdout.splitlines()[-1], r.stdout[-2000:]


def test_optuna_api_the_autotuner_uses(tmp_path):
    """The Optuna features the autotuner contract names: seeded samplers, enqueue_trial (the default config
    as trial 0), an RDB storage with heartbeats and a journal file storage that a second study resumes."""
    optuna = pytest.importorskip("optuna")
    from optuna.storages.journal import JournalFileBackend
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial):
        bm = trial.suggest_categorical("BM", [16, 32, 64, 128])
        warps = trial.suggest_int("num_warps", 1, 8, log=True)
        return abs(bm - 64) + abs(warps - 4) + 0.5

    def run(storage, sampler, n, name="s"):
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, load_if_exists=True)
        study.enqueue_trial({"BM": 32, "num_warps": 2})
        study.optimize(objective, n_trials=n)
        return study

    a = run(None, optuna.samplers.TPESampler(seed=3), 12)
    b = run(None, optuna.samplers.TPESampler(seed=3), 12)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]  # seeded: reproducible
    assert a.trials[0].params == {"BM": 32, "num_warps": 2} and a.best_value <= a.trials[0].value
    grid = optuna.samplers.GridSampler({"BM": [32, 64], "num_warps": [2, 4]})
    g = optuna.create_study(sampler=grid)
    g.optimize(objective, n_trials=4)
    assert g.best_params == {"BM": 64, "num_warps": 4} and g.best_value == 0.5
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'tune.db'}", heartbeat_interval=60, grace_period=120)
    assert len(run(rdb, optuna.samplers.RandomSampler(seed=1), 5).trials) == 5  # the enqueued one counts
    journal = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "tune.log")))
    run(journal, optuna.samplers.RandomSampler(seed=1), 3)
    again = run(journal, optuna.samplers.RandomSampler(seed=2), 2)  # a resumed study keeps the finished trials
    assert len(again.trials) == 5 and all(t.state == optuna.trial.TrialState.COMPLETE for t in again.trials)
