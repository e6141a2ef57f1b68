"""python -m tilekit.bench.packed_bytes_per_weight: Bytes of global loads per packed weight, read from compiled code. The kernel loads one packed tile and
stores it as fp16 (stores are st.global, not counted), so every ld.global is a packed-word load.
Triton sm_90 PTX is straight-line: each ld.global is issued once per thread (128 threads), so
bytes/weight = sum of load widths * 128 / weights. C backends (NVRTC sm_90a PTX, OpenCL C source): the per-element
path issues its loads once per element; the staged path issues one vector load per (row, vector of words) lane
on its fast path: rows * needed words * 4 bytes / weights."""
import re
import torch
import tilekit as tk


@tk.kernel
def dequant_tile(W, Out, BK: tk.constexpr = 32, BN: tk.constexpr = 64):
    k0, n0 = tk.program_id(0) * BK, tk.program_id(1) * BN
    tk.store(Out, (k0, n0), tk.load(W, (k0, n0), (BK, BN)).to(tk.float16))

LD = re.compile(r"\bld\.global(?:\.[a-z]+)*?(?:\.v(\d))?\.(?:[bsuf])(\d+)\b")

def loads(ptx):
    return [(int(m.group(1) or 1), int(m.group(2))) for m in LD.finditer(ptx)]

def widths(ls):
    return " ".join(f"{n}x ld.global{'.v%d' % v if v > 1 else ''}.b{b}" for (v, b), n in
                    sorted({k: ls.count(k) for k in ls}.items()))

for dt, bits in (("int3", 3), ("int4", 4)):
    for BK, BN in ((32, 64), (64, 128)):
        weights = BK * BN
        art = dequant_tile.compile("sm_90", f"{dt}[4096,4096]", "fp16[4096,4096]", BK=BK, BN=BN)
        ls = loads(art.asm["ptx"])
        print(f"triton sm_90  {dt} {BK}x{BN}: per thread {widths(ls)} -> "
              f"{sum(v * b // 8 for v, b in ls) * 128 / weights:.3f} B/weight issued")
        art = dequant_tile.compile("sm_90a", f"{dt}[4096,4096]", "fp16[4096,4096]", BK=BK, BN=BN, backend="cuda")
        ls = loads(art.asm["ptx"])
        src = art.source
        if "tk_packed_code" in src:  # per element: straight-line per-thread loads, once per element
            print(f"nvrtc  sm_90a {dt} {BK}x{BN}: per-element path, per thread {widths(ls)} -> "
                  f"{sum(v * b // 8 for v, b in ls) * 128 / weights:.3f} B/weight issued")
        else:
            needed = -(-(BN * bits) // 32)
            print(f"nvrtc  sm_90a {dt} {BK}x{BN}: staged, PTX has {widths(ls)} (vector fast path, scalar tail/edge "
                  f"path) -> fast path {BK * needed * 4 / weights:.3f} B/weight")
        cl = dequant_tile.source("opencl", tk.PackedTensor.empty((4096, 4096), getattr(tk, dt)),
                                 torch.empty(4096, 4096, dtype=torch.float16), BK=BK, BN=BN)
        print(f"opencl        {dt} {BK}x{BN}: vload4={cl.count('vload4(')} vload2={cl.count('vload2(')} "
              f"per-element tk_packed_code calls={cl.count('tk_packed_code(') - 1 if 'tk_packed_code' in cl else 0}")
