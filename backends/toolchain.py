"""The external tools every backend shares, each found in one place: is a GPU present, where cuobjdump and
nvdisasm are, what a cubin holds (SASS, registers, spills), and how a backend's failure is reported.

cuobjdump comes from pip (``nvidia-cuda-cuobjdump``), from Triton's bundled copy, or from PATH. Since CUDA
13.x (the pip builds), ``cuobjdump -sass`` runs ``nvdisasm``, which pip ships apart
(``nvidia-cuda-nvdisasm``); a cuobjdump that cannot find it prints no SASS at all. So every cuobjdump
is run with ``NVDISASM_PATH`` pointing at an nvdisasm (its own folder's, else pip's, Triton's or PATH's),
the first (cuobjdump, nvdisasm) pair that really prints SASS is kept, and when none does the error lists
each attempt and what it said. A cubin's SASS or resources are never silently empty.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import os
import re
import shutil
import subprocess
import tempfile

from ..errors import BackendError, BackendUnavailable, ToolchainError

INSTALL_NVIDIA_TOOLS = "pip install 'tilekit[nvrtc]' (nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm)"


# ---- GPUs ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def gpu_vendor():
    """"nvidia", "amd" (a ROCm torch with a device) or None. torch names both device types "cuda"."""
    try:
        import torch
        if not torch.cuda.is_available():
            return None
        return "amd" if torch.version.hip is not None else "nvidia"
    except Exception:  # no torch build with a GPU runtime: no GPU
        return None


def gpu_present(vendor=None) -> bool:
    """Whether a GPU is usable here; ``vendor`` ("nvidia" or "amd") asks for that kind."""
    found = gpu_vendor()
    return found is not None if vendor is None else found == vendor


# ---- NVIDIA binary tools: cuobjdump and nvdisasm ------------------------------------------------------

def _pip_nvidia_bin_dirs():
    """bin folders of pip's ``nvidia-*`` wheels: ``nvidia/cu13/bin`` (CUDA 13), ``nvidia/cuda_*/bin`` (12)."""
    try:
        import nvidia
    except Exception:
        return []
    dirs = []
    for base in nvidia.__path__:
        dirs += sorted(glob.glob(os.path.join(base, "cu[0-9]*", "bin")), reverse=True)
        dirs += sorted(glob.glob(os.path.join(base, "cuda_*", "bin")))
    return dirs


def _triton_bin_dir():
    try:
        import triton
    except Exception:
        return None
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


def tool_candidates(tool):
    """Every copy of ``tool`` ("cuobjdump", "nvdisasm") found, in order of preference:
    ``$TILEKIT_<TOOL>``, pip's, Triton's bundled one, then PATH."""
    paths = []
    if os.environ.get(f"TILEKIT_{tool.upper()}"):
        paths.append(os.environ[f"TILEKIT_{tool.upper()}"])
    paths += [os.path.join(d, tool) for d in _pip_nvidia_bin_dirs()]
    if _triton_bin_dir():
        paths.append(os.path.join(_triton_bin_dir(), tool))
    if shutil.which(tool):
        paths.append(shutil.which(tool))
    out = []
    for p in paths:
        if os.path.isfile(p) and os.access(p, os.X_OK) and os.path.realpath(p) not in map(os.path.realpath, out):
            out.append(p)
    return out


def _pairings():
    """(cuobjdump, nvdisasm or None) to try: each cuobjdump with the nvdisasm beside it, else the first
    one found elsewhere."""
    nvdisasms = tool_candidates("nvdisasm")
    for cuobjdump in tool_candidates("cuobjdump"):
        beside = os.path.join(os.path.dirname(cuobjdump), "nvdisasm")
        yield cuobjdump, beside if beside in nvdisasms else (nvdisasms[0] if nvdisasms else None)


def sass_tools_description():
    """What ``tilekit info`` says about reading SASS here."""
    pair = _working.get("sass") or next(_pairings(), None)
    if pair is None:
        return f"no cuobjdump ({INSTALL_NVIDIA_TOOLS})"
    tool, nvdisasm = pair
    return f"{tool} with nvdisasm {nvdisasm}" if nvdisasm else f"{tool}, but no nvdisasm ({INSTALL_NVIDIA_TOOLS})"


def _run(tool, nvdisasm, flag, cubin: bytes):
    env = dict(os.environ)
    if nvdisasm:
        env["NVDISASM_PATH"] = os.path.dirname(nvdisasm)
        env["PATH"] = os.path.dirname(nvdisasm) + os.pathsep + env.get("PATH", "")
    with tempfile.TemporaryDirectory(prefix="tilekit_cubin_") as d:
        path = os.path.join(d, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        return subprocess.run([tool, flag, path], capture_output=True, text=True, timeout=120, env=env)


_SASS_LINE = re.compile(r"^\s+/\*[0-9a-f]{4}\*/", re.M)
_working = {}  # "sass" -> the (cuobjdump, nvdisasm) pair that last printed SASS


def cubin_sass(cubin: bytes) -> str:
    """The SASS listing of a cubin. Raises ``BackendUnavailable`` when no cuobjdump is installed and
    ``ToolchainError`` (with every attempt's output) when none prints SASS."""
    pairs = ([_working["sass"]] if "sass" in _working else []) + list(_pairings())
    if not pairs:
        raise BackendUnavailable(f"cannot read SASS: no cuobjdump found; {INSTALL_NVIDIA_TOOLS}")
    attempts = []
    for tool, nvdisasm in dict.fromkeys(pairs):
        p = _run(tool, nvdisasm, "-sass", cubin)
        if p.returncode == 0 and _SASS_LINE.search(p.stdout):
            _working["sass"] = (tool, nvdisasm)
            return p.stdout
        said = (p.stderr.strip() or p.stdout.strip() or "no output")[-400:]
        attempts.append(f"  {tool} (nvdisasm: {nvdisasm or 'none found'}): exit {p.returncode}: {said}")
    raise ToolchainError("no cuobjdump printed SASS for the cubin (it needs nvdisasm: "
                         f"{INSTALL_NVIDIA_TOOLS}); tried:\n" + "\n".join(attempts))


_RESOURCES = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")


def cubin_resources(cubin: bytes) -> dict:
    """Registers, spills (bytes of thread-local memory), stack and static shared bytes of a cubin's kernel.

    ptxas puts spilled registers in the kernel's stack frame (cuobjdump's STACK), not in LOCAL. tilekit's
    kernels make no calls and keep register tiles in fully unrolled, constant-indexed arrays, and Triton's
    use none of their own, so any stack frame or local memory means the compiler spilled or failed to
    promote an array to registers: ``spills`` counts both."""
    tools = tool_candidates("cuobjdump")
    if not tools:
        raise BackendUnavailable(f"cannot read a cubin's resources: no cuobjdump found; {INSTALL_NVIDIA_TOOLS}")
    attempts = []
    for tool in tools:  # resource usage needs no nvdisasm
        p = _run(tool, None, "--dump-resource-usage", cubin)
        m = _RESOURCES.search(p.stdout)
        if m:
            reg, stack, shared, local = map(int, m.groups())
            return {"registers": reg, "spills": stack + local, "spill_bytes": stack + local, "stack_bytes": stack,
                    "static_shared_bytes": shared}
        attempts.append(f"  {tool}: exit {p.returncode}: {(p.stderr.strip() or p.stdout.strip() or 'no output')[-400:]}")
    raise ToolchainError("no cuobjdump gave a resource line (REG:... LOCAL:...) for the cubin; tried:\n"
                         + "\n".join(attempts))


# ---- one error type for backend failures --------------------------------------------------------------

def kernel_location(kernel):
    """(file, line of the ``def``) of a tilekit kernel, or (None, None) when its source is not readable."""
    try:
        info = kernel.source_info()
        return info.filename, info.start + info.node.lineno - 1
    except Exception:  # a kernel built from a string, or an object that is not a kernel: no location
        return None, None


def _foreign_compile_errors():
    """The exception types the compilers tilekit drives raise for a kernel they reject."""
    types = []
    try:
        from triton.compiler.errors import CompilationError
        types.append(CompilationError)
    except Exception:
        pass
    try:
        from triton.runtime.errors import PTXASError
        types.append(PTXASError)
    except Exception:
        pass
    try:
        import pyopencl
        types.append(pyopencl.Error)
    except Exception:
        pass
    return tuple(types)



def triton_series():
    """(major, minor) of the installed Triton, (0, 0) when it is not importable."""
    try:
        import triton
    except ImportError:
        return (0, 0)
    return tuple(int(x) for x in triton.__version__.split(".")[:2])


@contextlib.contextmanager
def reported_as(kernel, backend, target=None):
    """Inside this block, a compiler's failure (``BackendError`` or the compiler's own exception type)
    surfaces as one ``BackendError`` naming the kernel, the backend, the target and the kernel's file:line.
    Missing tools (``BackendUnavailable``) and tilekit's own errors pass through unchanged. Hot paths
    catch ``Exception`` themselves and call ``reraise_located`` (a generator-based block costs ~1 us)."""
    try:
        yield
    except Exception as e:
        reraise_located(e, kernel, backend, target)


def reraise_located(e, kernel, backend, target=None):
    """Raise ``e`` as ``reported_as`` would: a compiler's failure located at the kernel, anything else as is."""
    if isinstance(e, BackendUnavailable):
        raise e
    if isinstance(e, BackendError):
        if e.kernel is None:
            raise e.located(kernel, backend, target) from e
        raise e
    if isinstance(e, _foreign_compile_errors()):
        raise BackendError(f"{type(e).__name__}: {e}").located(kernel, backend, target) from e
    raise e
