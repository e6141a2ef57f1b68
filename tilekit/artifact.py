"""What an ahead-of-time compile returns: source, assembly, binary, resources, instruction summary."""
from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class Artifact:
    kernel: str
    target: str
    backend: str
    source: str
    asm: dict
    binary: bytes
    resources: dict
    instructions: dict
    compile_command: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def assembly(self) -> str:
        """The PTX or AMDGCN text."""
        for k in ("ptx", "amdgcn", "spirv", "sass"):
            if k in self.asm:
                return self.asm[k]
        return ""

    def report(self) -> str:
        rows = [("kernel", self.kernel), ("target", self.target), ("backend", self.backend)]
        rows += [(k, str(v)) for k, v in self.resources.items()]
        rows += [(k, str(v)) for k, v in self.instructions.items()]
        w = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


# ---- instruction summaries (shared by every backend that yields PTX or AMDGCN) -----------------------

_PTX_MATRIX = {"wgmma": r"\bwgmma\.mma_async", "mma.sync": r"\bmma\.sync", "wmma": r"\bwmma\.mma"}
_AMD_MATRIX = {"mfma": r"\bv_mfma_", "wmma": r"\bv_wmma_"}
_PTX_LOAD = re.compile(r"\bld\.global(?:\.[a-z]+)*?(?:\.v(\d))?\.(?:[bsuf])(\d+)\b")
_PTX_CP_ASYNC = re.compile(r"\bcp\.async\.c[ag]\.shared\.global(?:\.[a-z0-9_]+)*\s+\[[^\]]*\],\s*\[[^\]]*\],\s*(0x[0-9a-fA-F]+|\d+)")
_AMD_LOAD = re.compile(r"\b(?:global|buffer)_load_(dwordx(\d)|dword|short_d16\w*|ushort|sshort|ubyte|sbyte|b(\d+))\b")


def ptx_instruction_count(ptx: str) -> int:
    """Instructions in PTX text: statements ending in ';' that are not directives or declarations."""
    n = 0
    for line in ptx.splitlines():
        s = line.strip()
        if not s or s.startswith(("//", ".", "{", "}", "$")) or not s.endswith(";"):
            continue
        n += 1
    return n


def ptx_global_loads(ptx: str) -> list:
    """(vector width, bits per lane) of every ``ld.global`` in PTX text, in order."""
    return [(int(m.group(1) or 1), int(m.group(2))) for m in _PTX_LOAD.finditer(ptx)]


def summarize_ptx(ptx: str) -> dict:
    out = {name: len(re.findall(pat, ptx)) for name, pat in _PTX_MATRIX.items()}
    widest = max((v * b for v, b in ptx_global_loads(ptx)), default=0)
    for m in _PTX_CP_ASYNC.finditer(ptx):  # global -> shared copies count as global loads
        widest = max(widest, 8 * int(m.group(1), 0))
    if re.search(r"\bcp\.async\.bulk\.tensor", ptx):  # TMA moves whole tiles
        out["tma"] = len(re.findall(r"\bcp\.async\.bulk\.tensor", ptx))
    out["widest_global_load_bits"] = widest
    out["ptx_instructions"] = ptx_instruction_count(ptx)
    return out


def summarize_sass(sass: str) -> dict:
    """Tensor-core instructions (HMMA, IMMA) and the instruction count of a SASS listing."""
    return {"sass_hmma": len(re.findall(r"\bHMMA\b", sass)), "sass_imma": len(re.findall(r"\bIMMA\b", sass)),
            "sass_instructions": sum(1 for l in sass.splitlines() if re.match(r"\s+/\*[0-9a-f]{4}\*/", l))}


def summarize_amdgcn(asm: str) -> dict:
    out = {name: len(re.findall(pat, asm)) for name, pat in _AMD_MATRIX.items()}
    widest = 0
    for m in _AMD_LOAD.finditer(asm):
        kind = m.group(1)
        if kind.startswith("dwordx"):
            bits = 32 * int(m.group(2))
        elif kind == "dword":
            bits = 32
        elif m.group(3):
            bits = int(m.group(3))
        elif "short" in kind:
            bits = 16
        else:
            bits = 8
        widest = max(widest, bits)
    out["widest_global_load_bits"] = widest
    out["amdgcn_instructions"] = sum(1 for l in asm.splitlines()
                                     if l.startswith("\t") and l.strip() and not l.strip().startswith((".", ";")))
    return out


def amdgcn_resources(asm: str) -> dict:
    def meta(key):
        m = re.search(rf"\.{key}:\s+(\d+)", asm)
        return int(m.group(1)) if m else None
    return {"vgprs": meta("vgpr_count"), "sgprs": meta("sgpr_count"),
            "spills": (meta("vgpr_spill_count") or 0) + (meta("sgpr_spill_count") or 0),
            "lds_static_bytes": meta("group_segment_fixed_size")}
