"""CUDA C++ from the C-style emitter compiles with NVRTC for sm_80 and sm_90a, no GPU needed, and the
default matmul (DESIGN.md's example, fp16 in / fp32 accumulate) runs on tensor cores with no spills."""
import pytest
import torch

from cstyle_common import corpus_specializations
from tilekit.examples import matmul

nvrtc = pytest.importorskip("tilekit.backends.cuda.nvrtc")
_ok, _why = nvrtc.available()
pytestmark = pytest.mark.skipif(not _ok, reason=f"NVRTC unavailable: {_why} (pip install 'tilekit[nvrtc]')")

ARCHS = ("sm_80", "sm_90a")
SPECS = corpus_specializations()


@pytest.mark.parametrize("spec", SPECS, ids=[s[0] for s in SPECS])
def test_corpus_kernel_compiles(spec):
    _, kernel, args, cfg = spec
    src = kernel.source("cuda", *args, **cfg)
    assert "__global__" in src and "extern \"C\"" in src
    for arch in ARCHS:
        cubin, log, _ = nvrtc.compile_source(src, arch)
        assert cubin[:4] == b"\x7fELF", f"{arch}: no cubin\n{log}"


def meta(*shape, dtype=torch.float16):
    return torch.empty(*shape, dtype=dtype, device="meta")


_ART = {}


def artifact(target, dtype=torch.float16):
    key = (target, dtype)
    if key not in _ART:
        _ART[key] = matmul.compile(target, meta(1000, 1000, dtype=dtype), meta(1000, 1000, dtype=dtype),
                                   meta(1000, 1000, dtype=torch.float32), backend="cuda")
    return _ART[key]


@pytest.mark.parametrize("target", ARCHS)
def test_default_matmul_uses_tensor_cores_without_spills(target):
    art = artifact(target)
    assert art.backend == "cuda" and art.target == target
    assert art.instructions["sass_hmma"] > 0, art.report()            # HMMA in the SASS
    assert art.instructions["wmma"] + art.instructions["mma.sync"] > 0, art.report()  # and in the PTX
    assert art.resources["spills"] == 0, art.report()
    assert art.instructions["widest_global_load_bits"] == 128, art.report()
    assert 0 < art.resources["registers"] <= 255
    assert art.binary[:4] == b"\x7fELF"
    assert f".target {target}" in art.asm["ptx"] and ".entry k_matmul" in art.asm["ptx"]


def test_bf16_matmul_uses_tensor_cores():
    art = artifact("sm_80", torch.bfloat16)
    assert art.instructions["sass_hmma"] > 0 and art.resources["spills"] == 0, art.report()


def test_fp32_matmul_has_no_matrix_instruction_but_compiles():
    art = artifact("sm_80", torch.float32)  # no tf32 unless asked: the FMA loop
    assert art.instructions["sass_hmma"] == 0 and art.instructions["matrix"] == "fma", art.report()
    assert art.resources["spills"] == 0, art.report()


def test_sm_90a_defaults_to_the_cuda_backend():
    art = matmul.compile("sm_90a", meta(64, 64), meta(64, 64), meta(64, 64, dtype=torch.float32))
    assert art.backend == "cuda" and "nvrtc" in art.compile_command


# ---- reading SASS: never a silent empty listing ----------------------------------------------------

def test_a_cuobjdump_that_prints_no_sass_is_a_loud_error(tmp_path, monkeypatch):
    """CUDA 13.x's cuobjdump prints no SASS when it cannot find nvdisasm; that must fail with its reason,
    never count 0 HMMA."""
    from tilekit.backends import toolchain
    from tilekit.errors import ToolchainError
    fake = tmp_path / "cuobjdump"
    fake.write_text("#!/bin/sh\necho \"cuobjdump fatal   : Could not find executable file 'nvdisasm'\" >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(toolchain, "tool_candidates", lambda tool: [str(fake)] if tool == "cuobjdump" else [])
    monkeypatch.setattr(toolchain, "_working", {})
    with pytest.raises(ToolchainError, match="Could not find executable file 'nvdisasm'") as e:
        matmul.compile("sm_80", meta(64, 64), meta(64, 64), meta(64, 64, dtype=torch.float32), backend="cuda")
    assert "kernel 'matmul' failed on the cuda backend for sm_80" in str(e.value)
    assert e.value.filename.endswith("examples.py") and e.value.lineno > 0


def test_no_cuobjdump_at_all_is_backend_unavailable(monkeypatch):
    from tilekit.backends import toolchain
    from tilekit.errors import BackendUnavailable
    monkeypatch.setattr(toolchain, "tool_candidates", lambda tool: [])
    monkeypatch.setattr(toolchain, "_working", {})
    with pytest.raises(BackendUnavailable, match="no cuobjdump found"):
        toolchain.cubin_sass(b"\x7fELF")


def test_a_cuobjdump_without_nvdisasm_beside_it_is_given_one(tmp_path, monkeypatch):
    """pip's cuobjdump 13.x alone in its folder (nvidia-cuda-nvdisasm not installed) still gives SASS: it
    is run with NVDISASM_PATH pointing at an nvdisasm found elsewhere."""
    import shutil
    from tilekit.backends import toolchain
    real = toolchain.tool_candidates("cuobjdump")
    if not real or not toolchain.tool_candidates("nvdisasm"):
        pytest.skip("needs a cuobjdump and an nvdisasm (pip install 'tilekit[nvrtc]')")
    lonely = tmp_path / "cuobjdump"
    shutil.copy(real[0], lonely)
    monkeypatch.setenv("TILEKIT_CUOBJDUMP", str(lonely))
    monkeypatch.setattr(toolchain, "_working", {})
    cubin, _, _ = nvrtc.compile_source(matmul.source("cuda", meta(64, 64), meta(64, 64), meta(64, 64, dtype=torch.float32)),
                                       "sm_80")
    assert toolchain.tool_candidates("cuobjdump")[0] == str(lonely)
    sass = toolchain.cubin_sass(cubin)
    assert toolchain._working["sass"][0] == str(lonely) and "HMMA" in sass


def test_the_launch_cubin_is_content_hashed_in_the_cache_directory(monkeypatch, tmp_path):
    """binary_for (the GPU launch path, run here with the device query stubbed) writes its cubin through
    the cache, not under a predictable name in the shared temp directory."""
    import os
    monkeypatch.setenv("TILEKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    a, b, c = torch.randn(40, 24), torch.randn(24, 16), torch.empty(40, 16)
    matmul.source("cuda", a, b, c, BM=32, BN=32, BK=16)
    [compiled] = [ck for ck in matmul._cache.values() if type(ck).__name__ == "CompiledCUDA"][-1:]
    path = compiled.binary_for(0)
    assert os.path.dirname(os.path.dirname(path)) == str(tmp_path) and path.endswith(".cubin")
    with open(path, "rb") as f:
        assert f.read(4) == b"\x7fELF"
    assert compiled.binary_for(0) == path  # same source, same file
