"""Packaging: backends/, ops/, autotune/ and bench/ are importable only as tilekit.*, never as top-level
packages, and pyproject's explicit package list covers every package directory in the tree."""
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAPPED = ("backends", "ops", "autotune", "bench")


def run_python(code, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("name", MAPPED)
def test_no_top_level_package(name, tmp_path):
    r = run_python(f"import {name}", tmp_path)
    assert r.returncode != 0, f"`import {name}` worked outside the repo root: {r.stdout}"
    assert f"ModuleNotFoundError: No module named '{name}'" in r.stderr, r.stderr


def test_mapped_packages_import_under_tilekit(tmp_path):
    code = ("import tilekit, tilekit.backends, tilekit.backends.triton, tilekit.ops, tilekit.autotune, tilekit.bench\n"
            "import os\n"
            "print(os.path.dirname(tilekit.backends.__file__))")
    r = run_python(code, tmp_path)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == ROOT / "backends"


def _pyproject():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def package_dirs():
    """{dotted name: directory} for every directory holding an __init__.py, named as installed."""
    mapping = _pyproject()["tool"]["setuptools"]["package-dir"]
    by_dir = {Path(d): name for name, d in mapping.items()}
    out = {}
    for top, dotted in by_dir.items():
        base = ROOT / top
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if "__pycache__" in rel.parts:
                continue
            out[".".join([dotted, *rel.parts]) if rel.parts else dotted] = init.parent
    return out


def test_package_dir_maps_every_tree():
    mapping = _pyproject()["tool"]["setuptools"]["package-dir"]
    assert mapping["tilekit"] == "tilekit"
    for name in MAPPED:
        assert mapping[f"tilekit.{name}"] == name


def test_packages_list_covers_every_package_directory():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = package_dirs()
    assert {"tilekit", "tilekit.backends", "tilekit.ops", "tilekit.autotune", "tilekit.bench"} <= set(found)
    missing = sorted(set(found) - listed)
    assert not missing, f"pyproject.toml [tool.setuptools] packages lacks: {missing}"
    stale = sorted(listed - set(found))
    assert not stale, f"pyproject.toml lists packages with no __init__.py directory: {stale}"


def test_built_wheel_carries_templates_problems_and_candidates(tmp_path):
    """A real wheel (not the editable install) holds every data file the code reads, and renders kernels
    when installed away from the repository."""
    import subprocess
    import sys
    import zipfile
    import shutil
    out = tmp_path / "wheel"
    src = tmp_path / "src"  # a clean copy: a stale *.egg-info/SOURCES.txt would add files the config omits
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__", ".git",
                                                              ".hypothesis", "bench_out"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                        str(src)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = out.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = set()
    for top, dotted in [("backends", "tilekit/backends"), ("bench", "tilekit/bench")]:
        for f in (ROOT / top).rglob("*"):
            if f.suffix == ".j2" or (f.suffix == ".py" and {"problems", "candidates"} & set(f.parts)):
                wanted.add(f"{dotted}/{f.relative_to(ROOT / top).as_posix()}")
    assert any(w.endswith(".j2") for w in wanted) and any("/problems/" in w for w in wanted)
    missing = sorted(wanted - names)
    assert not missing, f"the wheel lacks data files: {missing}"
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    script = ("import torch, tilekit\n"
              "assert tilekit.__file__.startswith(%r), tilekit.__file__\n"
              "from tilekit.examples import matmul\n"
              "A = torch.empty(64, 64, dtype=torch.float16, device='meta')\n"
              "assert 'tl.dot' in matmul.source('triton', A, A, A)\n"
              "assert '__global__' in matmul.source('cuda', A, A, A)\n" % str(site))
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), TILEKIT_CACHE_DIR=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
