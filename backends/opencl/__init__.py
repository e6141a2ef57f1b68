"""The OpenCL backend: OpenCL C from the C-style emitter, built and run with PyOpenCL.

On a machine with no GPU this runs on the CPU through PoCL, with real work-groups, ``__local`` memory and
barriers, so it is how the C path is executed and tested here. Torch CPU tensors are copied into OpenCL
buffers and the written ones copied back; ``CompiledOpenCL.last_timing`` keeps the copy time apart from
the kernel time (from OpenCL profiling events).

Device choice: ``TILEKIT_OPENCL_DEVICE`` (a substring of the platform or device name), else PoCL, else
the first device found.
"""
from __future__ import annotations

import functools
import os
import time

import numpy as np
import torch

from ...errors import BackendError, BackendUnavailable
from .. import record, toolchain
from ..cstyle import Generated, flatten_args, storage_view

BUILD_OPTIONS = ["-cl-std=CL1.2"]


@functools.lru_cache(maxsize=None)
def _runtime():
    """(context, profiling queue, device), made once per process."""
    import pyopencl as cl
    want = os.environ.get("TILEKIT_OPENCL_DEVICE", "").lower()
    candidates = []
    for p in cl.get_platforms():
        try:
            devs = p.get_devices()
        except cl.Error:
            continue
        for d in devs:
            candidates.append((p, d))
    if not candidates:
        raise BackendUnavailable("no OpenCL device found (pip install pocl-binary-distribution gives a CPU one)")
    if want:
        picked = [c for c in candidates if want in c[0].name.lower() or want in c[1].name.lower()]
        if not picked:
            raise BackendUnavailable(f"TILEKIT_OPENCL_DEVICE={want!r} matches none of "
                                     f"{[f'{p.name}: {d.name}' for p, d in candidates]}")
    else:
        picked = [c for c in candidates if "portable computing language" in c[0].name.lower()] or candidates
    _, dev = picked[0]
    ctx = cl.Context([dev])
    queue = cl.CommandQueue(ctx, properties=cl.command_queue_properties.PROFILING_ENABLE)
    return ctx, queue, dev


def device_description():
    _, _, dev = _runtime()
    return f"{dev.platform.name.strip()} / {dev.name.strip()} (OpenCL {dev.version.strip()})"


def available():
    try:
        import pyopencl  # noqa: F401
    except Exception as e:
        return False, f"pyopencl is not importable ({e}); pip install 'tilekit[opencl]'"
    try:
        return True, f"OpenCL on {device_description()}"
    except Exception as e:
        return False, f"no usable OpenCL device: {e}"


# A kernel with barriers under a runtime branch builds without optimization: PoCL 3.0 (LLVM 14) at -O
# gave wrong values and corrupted the host heap on a uniform `if` around staged loads and stores.
UNOPTIMIZED_FEATURES = frozenset({"barrier_in_branch"})


@functools.lru_cache(maxsize=256)
def _program(source: str, unoptimized: bool = False):
    import pyopencl as cl
    ctx, _, _ = _runtime()
    try:
        return cl.Program(ctx, source).build(options=BUILD_OPTIONS + (["-cl-opt-disable"] if unoptimized else []))
    except cl.Error as e:
        raise BackendError(f"the OpenCL build failed:\n{e}\n--- source ---\n{source}") from None


class CompiledOpenCL:
    def __init__(self, kernel, fn, spec):
        self.name = kernel.__name__
        self.kernel = kernel
        self.gen = Generated(kernel.__name__, fn, "opencl", num_warps=spec.options.get("num_warps"))
        self.source = self.gen.source
        self._kernel = None
        self.last_timing = {}

    @property
    def cl_kernel(self):
        if self._kernel is None:
            import pyopencl as cl
            with toolchain.reported_as(self.kernel, "opencl", "opencl-cpu"):
                program = _program(self.source, bool(UNOPTIMIZED_FEATURES & self.gen.features))
                self._kernel = cl.Kernel(program, self.gen.symbol)  # one retrieval per compiled kernel
        return self._kernel

    def launch(self, args, grid):
        import pyopencl as cl
        ctx, queue, _ = _runtime()
        mf = cl.mem_flags
        t0 = time.perf_counter()
        buffers = {}      # (data_ptr, extent, dtype) -> (buffer, host numpy view, written)
        by_param = {}
        copy_in = []

        def pointer(name, t):
            if t.device.type != "cpu":
                raise ValueError(f"the OpenCL backend takes CPU tensors; '{name}' is on {t.device}")
            flat = storage_view(t.detach())
            host = flat.numpy()
            key = (flat.data_ptr(), flat.numel(), str(flat.dtype))
            hit = buffers.get(key)
            if hit is None:
                buf = cl.Buffer(ctx, mf.READ_WRITE, size=max(host.nbytes, 16))
                if host.nbytes:  # blocking: the kernel must never see a buffer before its data arrived
                    copy_in.append(cl.enqueue_copy(queue, buf, host, is_blocking=True))
                hit = [buf, host, False]
                buffers[key] = hit
            if name in self.gen.written:
                hit[2] = True
            by_param[name] = hit
            return hit[0]

        flat_args = flatten_args(self.gen.plan, args, pointer)
        knl = self.cl_kernel
        knl.set_args(*flat_args)
        T = self.gen.threads
        g = tuple(grid) + (1,) * (3 - len(grid))
        ev = cl.enqueue_nd_range_kernel(queue, knl, (g[0] * T, g[1], g[2]), (T, 1, 1))
        ev.wait()
        copy_out = []
        for buf, host, written in buffers.values():
            if written and host.nbytes:
                copy_out.append(cl.enqueue_copy(queue, host, buf, is_blocking=True))
        span = lambda evs: sum((e.profile.end - e.profile.start) for e in evs) * 1e-9
        self.last_timing = {"copy_in_s": span(copy_in), "kernel_s": span([ev]), "copy_out_s": span(copy_out),
                            "wall_s": time.perf_counter() - t0}


def build(kernel, fn, spec):
    return CompiledOpenCL(kernel, fn, spec)


def aot(kernel, fn, spec, target):
    """Build for the OpenCL device (``opencl-cpu``: PoCL). The artifact holds the OpenCL C source, the
    device binary PoCL returns, and what the runtime reports about the kernel's resources."""
    import pyopencl as cl
    from ...artifact import Artifact
    if target not in record("opencl").target_names:
        raise ValueError(f"the opencl backend compiles for {list(record('opencl').target_names)}, not {target!r}")
    gen = Generated(kernel.__name__, fn, "opencl", num_warps=spec.options.get("num_warps"))
    t0 = time.perf_counter()
    with toolchain.reported_as(kernel, "opencl", target):
        prog = _program(gen.source, bool(UNOPTIMIZED_FEATURES & gen.features))
    build_s = time.perf_counter() - t0
    _, _, dev = _runtime()
    knl = cl.Kernel(prog, gen.symbol)
    info = cl.kernel_work_group_info
    resources = {
        "work_group_size": gen.threads,
        "max_work_group_size": knl.get_work_group_info(info.WORK_GROUP_SIZE, dev),
        "local_mem_bytes": knl.get_work_group_info(info.LOCAL_MEM_SIZE, dev),
        "private_mem_bytes": knl.get_work_group_info(info.PRIVATE_MEM_SIZE, dev),
        "shared_bytes": gen.smem_bytes,
        "spills": None,
    }
    binaries = prog.get_info(cl.program_info.BINARIES)
    instructions = {"matrix": ",".join(gen.matrix_ops) or "none", "fma_loop_mma": gen.matrix_ops.count("fma"),
                    "source_lines": gen.source.count("\n")}
    return Artifact(kernel.__name__, target, "opencl", gen.source, {}, bytes(binaries[0]) if binaries else b"",
                    resources, instructions, f"pyopencl.Program(ctx, src).build({BUILD_OPTIONS}) on "
                    f"{device_description()}", extra={"build_s": build_s, "threads": gen.threads})


def host_arrays(t: torch.Tensor) -> np.ndarray:  # kept small and public for tests
    return storage_view(t).numpy()
