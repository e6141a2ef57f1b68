"""The tilekit command: info, show, compile, and clear errors for bad requests."""
import subprocess
import sys

import pytest

from tilekit.backends import BACKENDS
from tilekit.cli import main


def run(*argv):
    return subprocess.run([sys.executable, "-m", "tilekit.cli", *argv], capture_output=True, text=True, timeout=600)


def test_info_lists_every_backend_with_a_reason():
    r = run("info")
    assert r.returncode == 0, r.stderr
    for name in BACKENDS:
        assert f"  {name}" in r.stdout
    assert "cache directory" in r.stdout and "torch" in r.stdout


MARKERS = {"triton": "tl.load", "reference": "func @softmax_kernel", "opencl": "__kernel", "cuda": "__global__",
           "hip": "__global__"}
assert set(MARKERS) == set(BACKENDS), "a new backend needs its marker here"


@pytest.mark.parametrize("backend,marker", MARKERS.items())
def test_show_prints_the_generated_source(backend, marker, capsys):
    assert main(["show", "softmax", "--backend", backend, "--shape", "64,1000", "--dtype", "float32"]) == 0
    assert marker in capsys.readouterr().out


def test_compile_prints_resources_and_instructions(capsys):
    assert main(["compile", "matmul", "--target", "sm_90", "--shape", "1024,1024,1024"]) == 0
    out = capsys.readouterr().out
    for field in ("registers", "spills", "shared_bytes", "wgmma", "widest_global_load_bits"):
        assert field in out
    assert int(out.split("wgmma")[1].split()[0]) > 0


def test_bad_requests_are_errors_not_tracebacks():
    r = run("compile", "matmul", "--target", "opencl-cpu", "--backend", "triton")
    assert r.returncode == 2 and "triton backend compiles for" in r.stderr and "Traceback" not in r.stderr
    r = run("show", "nosuchop")
    assert r.returncode != 0 and "unknown op" in r.stderr
    r = run("compile", "matmul", "--target", "sm_90", "--shape", "4,4")
    assert r.returncode != 0 and "3-d --shape" in r.stderr


def test_compile_for_a_target_takes_that_architectures_default():
    """`tilekit compile OP --target T` compiles the config the op would launch on T: the attention forward's
    AMD default has narrower key blocks than sm_90's (which spill SGPRs on gfx942)."""
    import argparse
    from tilekit.cli import _example
    args = argparse.Namespace(op="attention", shape=None, dtype="float16")
    _, _, on_amd = _example(args, target="gfx942")
    _, _, on_hopper = _example(args, target="sm_90")
    assert on_amd["BN"] < on_hopper["BN"], (on_amd, on_hopper)
    _, _, moe = _example(argparse.Namespace(op="moe", shape=None, dtype="float16"), target="gfx942")
    assert moe  # an op whose example takes no target still compiles its one default
