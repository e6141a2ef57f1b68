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


def test_templates_are_package_data():
    data = _pyproject()["tool"]["setuptools"]["package-data"]["*"]
    assert "*.j2" in data
    assert list((ROOT / "backends" / "triton" / "templates").glob("*.j2"))
