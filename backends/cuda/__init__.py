"""The CUDA backend: CUDA C++ from the C-style emitter, compiled by NVRTC, launched through CuPy.

* ``kernel.source("cuda", ...)`` needs nothing but tilekit.
* ``kernel.compile("sm_80" | "sm_90" | "sm_90a", ..., backend="cuda")`` needs NVRTC (pip ``cuda-bindings``
  and ``nvidia-cuda-nvrtc``) and no GPU: PTX, cubin, SASS, registers/spills, instruction summary.
* ``kernel[grid](..., backend="cuda")`` needs an NVIDIA GPU, CUDA torch and CuPy: the cubin NVRTC builds for
  the device's compute capability is loaded with ``cupy.RawModule``; tensors are passed zero-copy
  (``cupy.from_dlpack``), and the launch goes on torch's current stream.
"""
from __future__ import annotations


from ...artifact import summarize_sass
from ...cache import write_generated
from ...errors import BackendUnavailable
from .. import record, toolchain
from ..cstyle import Generated, flatten_args, storage_view
from . import nvrtc as _nvrtc

TARGET_ARCH = {t: t for t in record("cuda").target_names}  # NVRTC takes the target names as archs


def launch_unavailable_reason():
    """None when a launch can work here, else why not."""
    if not toolchain.gpu_present("nvidia"):
        return ("no NVIDIA GPU (torch.cuda.is_available() is False); source and kernel.compile(target, ..., "
                "backend='cuda') work without one")
    try:
        import cupy  # noqa: F401
    except Exception as e:
        return f"CuPy is not importable ({e}); pip install 'tilekit[cuda]'"
    ok, why = _nvrtc.available()
    return None if ok else why


def available():
    ok, nv = _nvrtc.available()
    launch = launch_unavailable_reason()
    return True, (f"emits CUDA C++; compile: {nv if ok else 'unavailable (' + nv + ')'}; "
                  f"SASS: {toolchain.sass_tools_description()}; launch: {'yes' if launch is None else launch}")


def device_array(t):
    """A CuPy array over a CUDA tensor's memory, zero-copy (element 0 first; the kernel applies strides)."""
    import cupy
    return cupy.from_dlpack(storage_view(t.detach()))


class CompiledCUDA:
    dialect = "cuda"

    def __init__(self, kernel, fn, spec):
        self.name = kernel.__name__
        self.kernel = kernel
        self.gen = Generated(kernel.__name__, fn, self.dialect, num_warps=spec.options.get("num_warps"))
        self.source = self.gen.source
        self._functions = {}

    def binary_for(self, device):
        """(path of a cubin for ``device``'s compute capability)."""
        import torch
        major, minor = torch.cuda.get_device_capability(device)
        arch = f"sm_{major}{minor}" + ("a" if major == 9 else "")
        with toolchain.reported_as(self.kernel, self.dialect, arch):
            cubin, _, _ = _nvrtc.compile_source(self.source, arch)
        # content-hashed, written atomically in the cache directory (a shared temp dir is not ours to trust)
        return write_generated("cuda", f"{self.gen.symbol}_{arch}", cubin, ".cubin")

    def function(self, device):
        fn = self._functions.get(device)
        if fn is None:
            import cupy
            with cupy.cuda.Device(device.index):
                mod = cupy.RawModule(path=self.binary_for(device))
                fn = mod.get_function(self.gen.symbol)
                if self.gen.smem_bytes > 48 * 1024:
                    fn.max_dynamic_shared_size_bytes = self.gen.smem_bytes
            self._functions[device] = fn
        return fn

    def launch_args(self, args):
        """The flattened argument tuple CuPy passes to the kernel (checks every tensor is on one GPU)."""
        device = None

        def pointer(name, t):
            nonlocal device
            if t.device.type != "cuda":
                raise ValueError(f"the {self.dialect} backend takes GPU tensors; '{name}' is on {t.device}")
            device = device or t.device
            return device_array(t)
        return tuple(flatten_args(self.gen.plan, args, pointer)), device

    def launch(self, args, grid):
        why = launch_unavailable_reason()
        if why is not None:
            raise BackendUnavailable(f"cannot launch {self.name} on the {self.dialect} backend: {why}")
        self.launch_checked(args, grid)

    def launch_checked(self, args, grid):
        import cupy
        import torch
        flat, device = self.launch_args(args)
        g = tuple(grid) + (1,) * (3 - len(grid))
        fn = self.function(device)
        stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream)
        dyn = self.gen.smem_bytes if self.gen.smem_bytes > 48 * 1024 else 0
        with cupy.cuda.Device(device.index):
            fn(g, (self.gen.threads, 1, 1), flat, shared_mem=dyn, stream=stream)


def build(kernel, fn, spec):
    return CompiledCUDA(kernel, fn, spec)


def aot(kernel, fn, spec, target):
    from ...artifact import Artifact, summarize_ptx
    if target not in TARGET_ARCH:
        raise ValueError(f"the cuda backend compiles for {sorted(TARGET_ARCH)}, not {target!r}")
    ok, why = _nvrtc.available()
    if not ok:
        raise BackendUnavailable(why)
    arch = TARGET_ARCH[target]
    gen = Generated(kernel.__name__, fn, "cuda", num_warps=spec.options.get("num_warps"))
    with toolchain.reported_as(kernel, "cuda", target):
        ptx, _, _ = _nvrtc.compile_source(gen.source, arch, ptx=True)
        cubin, log, opts = _nvrtc.compile_source(gen.source, arch)
        sass = toolchain.cubin_sass(cubin)  # raises, with the reason, rather than give no SASS
        resources = toolchain.cubin_resources(cubin)
    resources.update({"shared_bytes": gen.smem_bytes, "threads": gen.threads, "num_warps": gen.num_warps})
    instructions = summarize_ptx(ptx)
    instructions.update(summarize_sass(sass))
    instructions["matrix"] = ",".join(gen.matrix_ops) or "none"
    cmd = "nvrtc " + " ".join(opts)
    return Artifact(kernel.__name__, target, "cuda", gen.source, {"ptx": ptx, "sass": sass}, cubin, resources,
                    instructions, cmd, extra={"nvrtc_log": log, "symbol": gen.symbol})
