"""The HIP backend: HIP C++ from the C-style emitter, compiled by ``hipcc``, launched through CuPy's ROCm build.

* ``kernel.source("hip", ...)`` needs nothing but tilekit.
* ``kernel.compile("gfx90a", ..., backend="hip")`` needs ``hipcc`` (Debian: ``apt-get install hipcc
  libamdhip64-dev rocm-device-libs``) and no GPU; it runs ``HIP_PLATFORM=amd hipcc --genco
  --offload-arch=gfx90a -O3 -save-temps`` and reads registers, spills and LDS from the code object's
  metadata in the AMDGCN listing. Debian's hipcc is clang 15, which knows no gfx942.
* ``kernel[grid](..., backend="hip")`` needs an AMD GPU, ROCm torch and CuPy for ROCm; the code object is built
  for the device's ``gcnArchName``.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile

from ...cache import write_generated
from ...errors import BackendError, BackendUnavailable
from .. import record, toolchain
from ..cstyle import Generated
from ..cuda import CompiledCUDA

TARGETS = record("hip").target_names  # hipcc (clang 15 in Debian) knows no gfx942


def hipcc_path():
    return os.environ.get("TILEKIT_HIPCC") or shutil.which("hipcc")


def launch_unavailable_reason():
    if not toolchain.gpu_present("amd"):
        return "no AMD GPU (a ROCm torch with a device); source and kernel.compile('gfx90a', ..., backend='hip') work without one"
    try:
        import cupy  # noqa: F401
    except Exception as e:
        return f"CuPy for ROCm is not importable ({e})"
    if hipcc_path() is None:
        return "hipcc is not on PATH"
    return None


def available():
    h = hipcc_path()
    launch = launch_unavailable_reason()
    return True, (f"emits HIP C++; compile: {h or 'unavailable (no hipcc on PATH; apt-get install hipcc libamdhip64-dev rocm-device-libs)'}; "
                  f"launch: {'yes' if launch is None else launch}")


class HipccError(BackendError):
    """hipcc rejected the source; the message holds its output and the source."""


def compile_source(source: str, arch: str):
    """(code object ELF bytes, AMDGCN listing, command) from ``hipcc --genco`` for ``arch``."""
    hipcc = hipcc_path()
    if hipcc is None:
        raise BackendUnavailable("hipcc is not on PATH (Debian: apt-get install hipcc libamdhip64-dev rocm-device-libs)")
    with tempfile.TemporaryDirectory(prefix="tilekit_hip_") as d:
        src = os.path.join(d, "kernel.hip")
        out = os.path.join(d, "kernel.hsaco")
        with open(src, "w") as f:
            f.write(source)
        cmd = [hipcc, "--genco", f"--offload-arch={arch}", "-O3", "-save-temps", src, "-o", out]
        env = {**os.environ, "HIP_PLATFORM": "amd"}
        p = subprocess.run(cmd, cwd=d, capture_output=True, text=True, env=env, timeout=600)
        if p.returncode != 0:
            raise HipccError(f"hipcc failed for {arch} (exit {p.returncode}):\n{p.stderr[-6000:]}\n--- source ---\n{source}")
        # --genco writes a clang offload bundle; -save-temps leaves the gfx code object (an ELF) beside it
        objs = glob.glob(os.path.join(d, f"*{arch}*.out"))
        with open(objs[0] if objs else out, "rb") as f:
            binary = f.read()
        asm_files = glob.glob(os.path.join(d, f"*{arch}*.s"))
        asm = open(asm_files[0]).read() if asm_files else ""
    shown = " ".join(os.path.basename(c) if c == src else c for c in cmd)
    return binary, asm, f"HIP_PLATFORM=amd {shown}"


class CompiledHIP(CompiledCUDA):
    dialect = "hip"

    def binary_for(self, device):
        import torch
        arch = torch.cuda.get_device_properties(device).gcnArchName.split(":")[0]
        with toolchain.reported_as(self.kernel, "hip", arch):
            binary, _, _ = compile_source(self.source, arch)
        # content-hashed, written atomically in the cache directory (a shared temp dir is not ours to trust)
        return write_generated("hip", f"{self.gen.symbol}_{arch}", binary, ".hsaco")

    def launch(self, args, grid):
        why = launch_unavailable_reason()
        if why is not None:
            raise BackendUnavailable(f"cannot launch {self.name} on the hip backend: {why}")
        super().launch_checked(args, grid)


def build(kernel, fn, spec):
    return CompiledHIP(kernel, fn, spec)


def aot(kernel, fn, spec, target):
    from ...artifact import Artifact, amdgcn_resources, summarize_amdgcn
    if target not in TARGETS:
        raise ValueError(f"the hip backend compiles for {list(TARGETS)}, not {target!r}")
    gen = Generated(kernel.__name__, fn, "hip", num_warps=spec.options.get("num_warps"))
    with toolchain.reported_as(kernel, "hip", target):
        binary, asm, cmd = compile_source(gen.source, target)
    resources = amdgcn_resources(asm)
    resources.update({"shared_bytes": gen.smem_bytes, "threads": gen.threads, "num_warps": gen.num_warps})
    instructions = summarize_amdgcn(asm)
    instructions["matrix"] = ",".join(gen.matrix_ops) or "none"
    return Artifact(kernel.__name__, target, "hip", gen.source, {"amdgcn": asm}, binary, resources, instructions,
                    cmd, extra={"symbol": gen.symbol})
