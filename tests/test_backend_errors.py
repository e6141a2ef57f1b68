"""Every backend's compile failure surfaces as one ``tilekit.BackendError`` naming the kernel, the backend,
the target and the kernel's ``def`` file:line, with the compiler's own message. Each case makes the real
compiler fail (a bad option, a failing hipcc, a Triton static_assert)."""
import inspect
import os

import pytest
import torch

import tilekit as tk
from tilekit.examples import matmul

DEF_LINE = next(i for i, l in enumerate(inspect.getsourcelines(matmul.fn)[0]) if l.lstrip().startswith("def ")) \
    + inspect.getsourcelines(matmul.fn)[1]


def meta(*shape, dtype=torch.float16):
    return torch.empty(*shape, dtype=dtype, device="meta")


ARGS = (meta(64, 64), meta(64, 64), meta(64, 64, dtype=torch.float32))


def check(err, backend, target, says):
    assert isinstance(err, tk.BackendError)
    assert err.kernel == "matmul" and err.backend == backend and err.target == target
    assert err.filename.endswith(os.path.join("tilekit", "examples.py")) and err.lineno == DEF_LINE
    text = str(err)
    assert text.startswith(f"{err.filename}:{DEF_LINE}: kernel 'matmul' failed on the {backend} backend")
    assert says in text, text


def test_nvrtc_failure(monkeypatch):
    nvrtc = pytest.importorskip("tilekit.backends.cuda.nvrtc")
    if not nvrtc.available()[0]:
        pytest.skip(nvrtc.available()[1])
    real = nvrtc.options_for
    monkeypatch.setattr(nvrtc, "options_for", lambda arch, ptx: real(arch, ptx) + ["--no-such-nvrtc-option"])
    with pytest.raises(tk.BackendError) as e:
        matmul.compile("sm_80", *ARGS, backend="cuda")
    check(e.value, "cuda", "sm_80", "no-such-nvrtc-option")
    assert isinstance(e.value, nvrtc.NVRTCError)  # the specific type is kept


def test_hipcc_failure(tmp_path, monkeypatch):
    fake = tmp_path / "hipcc"
    fake.write_text("#!/bin/sh\necho 'error: the fake hipcc refuses' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("TILEKIT_HIPCC", str(fake))
    with pytest.raises(tk.BackendError) as e:
        matmul.compile("gfx90a", *ARGS, backend="hip")
    check(e.value, "hip", "gfx90a", "the fake hipcc refuses")
    assert "exit 3" in str(e.value)


def test_opencl_build_failure(monkeypatch):
    from tilekit.backends import opencl
    if not opencl.available()[0]:
        pytest.skip(opencl.available()[1])
    monkeypatch.setattr(opencl, "BUILD_OPTIONS", ["-cl-no-such-option"])
    opencl._program.cache_clear()
    try:
        with pytest.raises(tk.BackendError) as e:
            matmul.compile("opencl-cpu", *ARGS, backend="opencl")
    finally:
        opencl._program.cache_clear()
    check(e.value, "opencl", "opencl-cpu", "OpenCL build failed")


def test_triton_compile_failure(monkeypatch):
    pytest.importorskip("triton")
    from tilekit.backends.triton import gpu_compile
    from tilekit.backends.triton.lower import function_name
    real = gpu_compile.emit

    def failing(fn, name):
        lines = real(fn, name).splitlines()
        at = next(i for i, l in enumerate(lines) if l.startswith(f"def {function_name(name)}("))
        lines.insert(at + 1, "    tl.static_assert(False, 'tilekit test: this kernel must not compile')")
        return "\n".join(lines) + "\n"
    monkeypatch.setattr(gpu_compile, "emit", failing)
    with pytest.raises(tk.BackendError) as e:
        matmul.compile("sm_90", *ARGS)
    check(e.value, "triton", "sm_90", "this kernel must not compile")
