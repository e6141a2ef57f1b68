"""The backend registry is the one place that says which backends exist, what each compiles for, which
devices it launches on and which is the default; every other list is derived from it."""
import argparse

import pytest
import torch

from tilekit import backends
from tilekit.backends import BACKENDS, REGISTRY, TARGETS, get_backend, record
from tilekit.examples import matmul


def meta(*shape, dtype=torch.float16):
    return torch.empty(*shape, dtype=dtype, device="meta")


def test_every_target_has_exactly_one_default_backend_that_compiles_it():
    for name, t in TARGETS.items():
        assert name in record(t.backend).target_names
        defaults = [b.name for b in REGISTRY if name in b.default_targets]
        assert defaults == [t.backend]
    assert {t for b in REGISTRY for t in b.target_names} == set(TARGETS)


def test_backend_modules_claim_only_the_registry_targets():
    """hip once claimed gfx908 and gfx942, which TARGETS rejected."""
    assert get_backend("hip").TARGETS == record("hip").target_names
    assert set(get_backend("cuda").TARGET_ARCH) == set(record("cuda").target_names)
    for b in REGISTRY:
        assert set(b.target_names) <= set(TARGETS), b.name


@pytest.mark.parametrize("name", [b.name for b in REGISTRY if b.targets])
def test_a_target_a_backend_lacks_is_a_clear_error(name):
    other = next(t for t in TARGETS if t not in record(name).target_names)
    with pytest.raises(ValueError, match=f"the {name} backend compiles for"):
        matmul.compile(other, meta(64, 64), meta(64, 64), meta(64, 64, dtype=torch.float32), backend=name)


def test_device_defaults_come_from_the_registry():
    import tilekit.ops as tk_ops
    assert backends.default_backend(torch.device("cpu")) == "reference"
    assert backends.default_backend(None) == "reference"
    assert backends.default_backend(torch.device("cuda", 0)) == "triton"
    for dev in (torch.device("cpu"), torch.device("cuda", 0)):  # the ops and the launch agree
        assert tk_ops.backend_for(dev) == backends.default_backend(dev)


def test_launch_device_policy():
    backends.check_launch_device("reference", torch.device("cpu"))
    with pytest.raises(ValueError, match="runs on CPU tensors only"):  # meta tensors never launch
        backends.check_launch_device("reference", torch.device("meta"))
    with pytest.raises(ValueError, match="the reference backend runs on CPU tensors only"):
        backends.check_launch_device("reference", torch.device("cuda", 0), here=False)
    backends.check_launch_device("cuda", torch.device("cuda", 0), here=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="the triton backend runs on CPU tensors only here"):
            backends.check_launch_device("triton", torch.device("cuda", 0))
        assert "reference" in backends.runnable_backends("cpu") and "cuda" not in backends.runnable_backends("cpu")


def test_cli_choices_are_the_registry():
    from tilekit.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    show = {a.dest: a for a in sub.choices["show"]._actions}
    compile_ = {a.dest: a for a in sub.choices["compile"]._actions}
    assert tuple(show["backend"].choices) == BACKENDS
    assert set(compile_["backend"].choices) == {b.name for b in REGISTRY if b.targets}
    assert set(compile_["target"].choices) == set(TARGETS)


def test_unknown_backend_names_list_the_registry():
    with pytest.raises(ValueError, match="choose one of " + ", ".join(BACKENDS)):
        record("vulkan")


def test_triton_interpreter_floor():
    """Triton < 3.8's interpreter fails on int arguments equal to 1; a CPU launch there says so instead.
    Both branches run: the main run has the newest triton, tests/test_toolchain_range.py the oldest."""
    import triton
    import tilekit as tk
    from tilekit.backends.triton import INTERPRETER_MIN_VERSION, launch_unavailable_reason
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: Triton compiles instead of interpreting")
    x = torch.randn(1, 37)
    y = torch.empty_like(x)
    old = tuple(int(v) for v in triton.__version__.split(".")[:2]) < INTERPRETER_MIN_VERSION
    assert (launch_unavailable_reason() is not None) == old
    if old:
        with pytest.raises(tk.BackendUnavailable, match="mistypes int arguments equal to 1"):
            copy_rows[(1,)](x, y, backend="triton")
    else:
        copy_rows[(1,)](x, y, backend="triton")  # shape (1, 37): int arguments equal to 1
        torch.testing.assert_close(y, x)


import tilekit as _tk  # noqa: E402


@_tk.kernel
def copy_rows(X, Y, BN: _tk.constexpr = 64):
    r = _tk.program_id(0)
    _tk.store(Y, (r, 0), _tk.load(X, (r, 0), (1, BN)))


def test_every_backend_that_can_run_on_the_cpu_runs_here():
    """The tests' backend lists (tests/conftest.py) keep only what runs here; CI must lose none of them."""
    import os
    from conftest import cpu_backends
    want = [b.name for b in REGISTRY if "cpu" in b.launches_on_without_gpu]
    missing = [b for b in want if b not in cpu_backends()]
    if os.environ.get("TILEKIT_TOOLCHAIN_END") == "low" or torch.cuda.is_available():
        missing = [b for b in missing if b != "triton"]  # the 3.6 interpreter is refused; a GPU compiles instead
    assert not missing, {b: record(b).available()[1] for b in missing}
    assert cpu_backends(cstyle=False) == tuple(b for b in cpu_backends() if not record(b).cstyle)
