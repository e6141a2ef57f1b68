"""Ahead-of-time Triton compilation for GPU targets, with no GPU present.

``triton.compile(ASTSource(...), target=GPUTarget(...))`` yields PTX + cubin (NVIDIA) or AMDGCN + hsaco
(AMD). Registers and spills come from the cubin (cuobjdump) or the AMD code
object's metadata (``backends/toolchain.py``).
"""
from __future__ import annotations

from ...artifact import Artifact, amdgcn_resources, summarize_amdgcn, summarize_ptx
from ...backends import TARGETS, record
from .lower import emit, function_name, scalar_param_name, tensor_param_names
from . import load_module
from .. import toolchain
from ..toolchain import cubin_resources  # also imported from here by bench/abstraction_cost.py
from ...cache import write_generated

_PTR = {"float16": "*fp16", "bfloat16": "*bf16", "float32": "*fp32", "float64": "*fp64", "int8": "*i8",
        "int16": "*i16", "int32": "*i32", "int64": "*i64", "uint8": "*u8", "uint16": "*u16", "uint32": "*u32",
        "bool_": "*i1"}
_SCALAR = {"int32": "i32", "int64": "i64", "float32": "fp32", "bool_": "i1"}


def signature_for(fn, divisible=None):
    """Triton signature, constants and divisibility attributes for the flattened parameters.

    Tensors are taken as contiguous: the innermost stride is the constant 1; pointers are 16-aligned;
    shapes and strides in ``divisible`` ({(param, "shape"|"stride", dim)}; None: all) are divisible by
    16 — what Triton itself specializes on at launch.
    """
    sig, constants, attrs = {}, {}, {}
    idx = 0
    for p in fn.params:
        if p.kind == "scalar":
            sig[scalar_param_name(p)] = _SCALAR[p.value.dtype.name]
            idx += 1
            continue
        t = p.value.type
        names = tensor_param_names(p)  # pointer, shapes, then (word) strides; read by position, not by name
        for j, n in enumerate(names):
            if j == 0:
                sig[n] = "*i32" if t.packed else _PTR[t.dtype.name]
                attrs[(idx,)] = [["tt.divisibility", 16]]
            elif not t.packed and j == len(names) - 1:
                sig[n] = "constexpr"
                constants[n] = 1
            else:
                sig[n] = "i32"
                kind, dim = ("shape", j - 1) if j <= t.rank else ("stride", j - 1 - t.rank)
                if divisible is None or (p.name, kind, dim) in divisible:
                    attrs[(idx,)] = [["tt.divisibility", 16]]
            idx += 1
    return sig, constants, attrs


def compile_for_target(kernel, fn, spec, target, num_warps=None, num_stages=None, divisible=None):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    mine = record("triton").target_names
    if target not in mine:
        raise ValueError(f"the triton backend compiles for {list(mine)}, not {target!r}")
    _, backend, arch, warp = TARGETS[target]
    source = emit(fn, kernel.__name__)
    path = write_generated("triton", kernel.__name__, source, ".py")
    ns = load_module(path, interpret=False, source=source)
    jf = JITFunction(ns[function_name(kernel.__name__)])
    sig, constants, attrs = signature_for(fn, divisible if divisible is not None else spec.divisible)
    options = {"enable_fp_fusion": True}  # Triton's current default, stated so it does not warn
    nw = num_warps or spec.options.get("num_warps")
    ns_ = num_stages or spec.options.get("num_stages")
    if nw:
        options["num_warps"] = nw
    if ns_:
        options["num_stages"] = ns_
    with toolchain.reported_as(kernel, "triton", target):
        compiled = triton.compile(ASTSource(jf, sig, constants, attrs), target=GPUTarget(backend, arch, warp),
                                  options=options)
    asm = {k: v for k, v in compiled.asm.items() if isinstance(v, str)}
    md = compiled.metadata
    if backend == "cuda":
        binary = compiled.asm["cubin"]
        with toolchain.reported_as(kernel, "triton", target):
            resources = cubin_resources(binary)
        summary = summarize_ptx(asm["ptx"])
    else:
        binary = compiled.asm["hsaco"]
        resources = amdgcn_resources(asm["amdgcn"])
        summary = summarize_amdgcn(asm["amdgcn"])
    resources["shared_bytes"] = md.shared
    resources["num_warps"] = md.num_warps
    resources["num_stages"] = getattr(md, "num_stages", None)
    cmd = (f"triton.compile(ASTSource({kernel.__name__}, signature={sig}, constexprs={constants}), "
           f"target=GPUTarget({backend!r}, {arch!r}, {warp}), options={options})")
    return Artifact(kernel.__name__, target, "triton", source, asm, binary, resources, summary, cmd)
