"""Device fingerprints: the hard keys (device, arch, backend) that name a dispatch table, and the soft keys
(tilekit, driver and runtime versions) that an entry records."""
from __future__ import annotations

import functools
import platform
import re

import torch


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=None)
def fingerprint(backend: str, device_type: str = "cpu", index: int = 0) -> dict:
    """{"device", "arch", "backend", "tilekit", "driver", "runtime"} for launches of ``backend`` on
    ``device_type``. The first three are hard keys, the rest soft."""
    import tilekit
    # the physical device the timing lock is keyed by: every CPU backend shares the CPU's cores
    out = {"backend": backend, "tilekit": tilekit.__version__,
           "physical": "cpu" if device_type == "cpu" else f"{device_type}{index}"}
    if backend == "opencl":
        import pyopencl
        from tilekit.backends.opencl import _runtime
        _, _, dev = _runtime()
        out.update(device=dev.name.strip(), arch="opencl-cpu" if dev.type & pyopencl.device_type.CPU else "opencl-gpu",
                   driver=f"{dev.platform.name.strip()} {dev.driver_version.strip()}",
                   runtime=f"pyopencl {pyopencl.VERSION_TEXT}")
    elif device_type == "cuda":
        props = torch.cuda.get_device_properties(index)
        arch = getattr(props, "gcnArchName", "") or f"sm_{props.major}{props.minor}"
        out.update(device=props.name, arch=arch.split(":")[0],
                   driver=f"cuda {torch.version.cuda}" if torch.version.cuda else f"hip {torch.version.hip}",
                   runtime=_runtime_version(backend))
    else:
        out.update(device=_cpu_name(), arch=platform.machine(), driver="none", runtime=_runtime_version(backend))
    return out


def _runtime_version(backend):
    if backend == "triton":
        import triton
        return f"triton {triton.__version__}"
    if backend == "reference":
        import numpy
        return f"numpy {numpy.__version__}"
    if backend == "cuda":
        import cupy
        return f"cupy {cupy.__version__}"
    return f"torch {torch.__version__}"


HARD_KEYS = ("device", "arch", "backend")
SOFT_KEYS = ("tilekit", "driver", "runtime")


def table_name(fp: dict) -> str:
    """The dispatch table's file name for a fingerprint: readable, one per (device, arch, backend)."""
    text = "__".join(fp[k] for k in HARD_KEYS)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:150] + ".json"


def lock_name(fp: dict) -> str:
    """The timing lock's name: one per physical device, whatever backend times on it."""
    name = "cpu" if fp["physical"] == "cpu" else f"{fp['device']}__{fp['physical']}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:150] + ".timing.lock"
