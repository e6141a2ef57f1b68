"""CUDA C++ -> PTX / cubin with NVRTC (``cuda.bindings.nvrtc``), and reading the cubin back.

No GPU or driver is needed. WMMA (``<mma.h>``) needs the CUDA toolkit's headers: ``TILEKIT_CUDA_INCLUDE``,
else ``$CUDA_HOME/include``, else the include folder beside ``nvcc``, else ``/usr/local/cuda/include``.
SASS and resource usage come from ``cuobjdump`` through ``backends/toolchain.py``.
"""
from __future__ import annotations

import functools
import glob
import os
import re
import shutil

from ...errors import BackendError

ARCHS = {"sm_80": "sm_80", "sm_86": "sm_86", "sm_89": "sm_89", "sm_90": "sm_90", "sm_90a": "sm_90a"}


class NVRTCError(BackendError):
    """NVRTC rejected the source; the message holds its log and the source."""


def nvrtc_module():
    from cuda.bindings import nvrtc
    return nvrtc


def available():
    try:
        nv = nvrtc_module()
        err, major, minor = nv.nvrtcVersion()
        return True, f"NVRTC {major}.{minor}"
    except Exception as e:
        return False, f"NVRTC is not importable ({e}); pip install 'tilekit[nvrtc]'"


@functools.lru_cache(maxsize=None)
def cuda_include_dir():
    cands = []
    if os.environ.get("TILEKIT_CUDA_INCLUDE"):
        cands.append(os.environ["TILEKIT_CUDA_INCLUDE"])
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            cands.append(os.path.join(os.environ[var], "include"))
    nvcc = shutil.which("nvcc")
    if nvcc:
        cands.append(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "include"))
    cands += ["/usr/local/cuda/include"] + sorted(glob.glob("/usr/local/cuda-*/include"), reverse=True)
    for c in cands:
        if os.path.exists(os.path.join(c, "mma.h")):
            return c
    return None


def _check(result, prog=None, what="NVRTC"):
    nv = nvrtc_module()
    err = result[0]
    if err != nv.nvrtcResult.NVRTC_SUCCESS:
        log = program_log(prog) if prog is not None else ""
        raise NVRTCError(f"{what} failed: {err}\n{log}")
    return result[1:] if len(result) > 2 else (result[1] if len(result) == 2 else None)


def program_log(prog):
    nv = nvrtc_module()
    _, n = nv.nvrtcGetProgramLogSize(prog)
    buf = b" " * n
    nv.nvrtcGetProgramLog(prog, buf)
    return buf.decode(errors="replace").rstrip("\x00 ")


def options_for(arch, ptx: bool):
    """NVRTC options: ``compute_XX`` for PTX, ``sm_XX`` for a cubin."""
    virt = arch.replace("sm_", "compute_")
    opts = [f"--gpu-architecture={virt if ptx else arch}", "--std=c++17", "-default-device", "-lineinfo"]
    inc = cuda_include_dir()
    if inc:
        opts.append(f"-I{inc}")
    return opts


def compile_source(source: str, arch: str, name="kernel.cu", ptx=False):
    """(PTX text or cubin bytes, log, options). Raises NVRTCError with the compiler log on failure."""
    if not re.fullmatch(r"sm_\d+a?", arch):
        raise ValueError(f"NVRTC target {arch!r} is not an sm_XX architecture (e.g. {sorted(ARCHS)})")
    nv = nvrtc_module()
    err, prog = nv.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], [])
    if err != nv.nvrtcResult.NVRTC_SUCCESS:
        raise NVRTCError(f"nvrtcCreateProgram failed: {err}")
    opts = options_for(arch, ptx)
    try:
        (err,) = nv.nvrtcCompileProgram(prog, len(opts), [o.encode() for o in opts])
        log = program_log(prog)
        if err != nv.nvrtcResult.NVRTC_SUCCESS:
            raise NVRTCError(f"NVRTC failed to compile for {arch} ({err}):\n{log}\n--- source ---\n{source}")
        if ptx:
            _, n = nv.nvrtcGetPTXSize(prog)
            buf = b" " * n
            nv.nvrtcGetPTX(prog, buf)
            return buf.rstrip(b"\x00").decode(), log, opts
        _, n = nv.nvrtcGetCUBINSize(prog)
        buf = b" " * n
        nv.nvrtcGetCUBIN(prog, buf)
        return bytes(buf), log, opts
    finally:
        nv.nvrtcDestroyProgram(prog)
