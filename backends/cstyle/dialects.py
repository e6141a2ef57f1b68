"""The three C dialects. Each overrides only what differs: the kernel signature, thread/block indices, the
barrier, the shared-memory qualifier, math function names, the fp64 cast, vector loads/stores, 16-bit
float conversions (in its template's prelude), atomics and the matrix instruction. Everything else is
:class:`~backends.cstyle.emitter.CEmitter`."""
from __future__ import annotations

from ... import dtypes as D
from .types import rtype, stype

_SIZEOF = {"bool": 1, "tk_i8": 1, "tk_u8": 1, "tk_i16": 2, "tk_u16": 2, "int": 4, "unsigned": 4, "float": 4,
           "double": 8, "tk_i64": 8, "tk_u64": 8, "__half": 2, "__nv_bfloat16": 2, "_Float16": 2,
           "signed char": 1}


class Dialect:
    name = "c"
    template = None
    warp_size = 32
    default_num_warps = 4
    default_vec = 4
    global_qual = ""
    fn_qual = "static inline"
    barrier = "__syncthreads();"
    unroll = "#pragma unroll"
    vector_needs_alignment = True
    pad_branch_barriers = False
    barrier_before_loop_stores = False
    unguarded_window_extract = False

    math_names = {}    # C math function -> this dialect's name for it (optable's C spellings use C names)

    def local_ptr(self, ctype):
        return f"{ctype}*"

    # -- the kernel signature --
    def tensor_params(self, name, t, written):
        """The C parameters one tensor parameter becomes: pointer, shapes, (word) strides."""
        const = "" if written else "const "
        out = [f"{self.global_qual}{const}{stype(t.dtype, t.packed)}* {name}_ptr"]
        out += [f"int {name}_shape{d}" for d in range(t.rank)]
        if t.packed:
            return out + [f"int {name}_wstride{d}" for d in range(t.rank - 1)]
        return out + [f"int {name}_stride{d}" for d in range(t.rank)]

    def scalar_param(self, cname, int_name, dt):
        """A scalar parameter (a bool travels as the int ``int_name``)."""
        return f"int {int_name}" if dt.is_bool else f"{rtype(dt)} {cname}"

    # -- math --
    def math_name(self, fn):
        return self.math_names.get(fn, fn)

    def to_double(self, em, expr):
        """``expr`` widened to double (a feature the kernel then needs on OpenCL: cl_khr_fp64)."""
        em.features.add("fp64")
        return f"(double)({expr})"

    def sizeof(self, ctype):
        return _SIZEOF[ctype]

    def program_id(self, axis):
        return f"(int)blockIdx.{'xyz'[axis]}"

    def num_programs(self, axis):
        return f"(int)gridDim.{'xyz'[axis]}"

    # -- vector memory access: V elements of a tensor of dtype dt at ``ptr`` --
    def vector_pieces(self, dt, v):
        """(vector type, elements per piece): V elements move as 16-byte pieces (8 bytes when V is smaller)."""
        st = stype(dt)
        size = self.sizeof(st)
        if dt.is_bool or size not in (2, 4) or v * size < 8:
            return None
        piece = 16 if v * size >= 16 else 8
        per = piece // size
        if size == 4:
            base = {"float": "float", "int": "int", "unsigned": "uint"}.get(st)
            return (f"{base}{per}", per) if base else None
        if dt in (D.float16, D.bfloat16):
            return ("uint4" if piece == 16 else "uint2", per)
        return None

    def vector_type(self, dt, v):
        p = self.vector_pieces(dt, v)
        return p and p[0]

    def vector_align(self, dt, v):
        """Bytes a V-element chunk's address must be aligned to for the vector path."""
        return self.vector_pieces(dt, v)[1] * self.sizeof(stype(dt))

    def vload(self, dt, v, ptr, dests):
        vt, per = self.vector_pieces(dt, v)
        size = self.sizeof(stype(dt))
        comps = "xyzw"
        lines = []
        conv = "tk_h2f" if dt is D.float16 else "tk_b2f"
        for p in range(v // per):
            name = f"_v{p}"
            lines.append(f"const {vt} {name} = *((const {vt}*)({ptr} + {p * per}));")
            for j in range(per):
                d = dests[p * per + j]
                if size == 4:
                    lines.append(f"{d} = {name}.{comps[j]};")
                else:
                    w = f"{name}.{comps[j // 2]}"
                    bits = f"(tk_u16)({w} & 0xffffu)" if j % 2 == 0 else f"(tk_u16)({w} >> 16)"
                    lines.append(f"{d} = {conv}({bits});")
        return lines

    def vstore(self, dt, v, ptr, vals):
        vt, per = self.vector_pieces(dt, v)
        size = self.sizeof(stype(dt))
        conv = "tk_f2h" if dt is D.float16 else "tk_f2b"
        lines = []
        for p in range(v // per):
            part = vals[p * per:(p + 1) * per]
            if size != 4:
                part = [f"((unsigned){conv}({part[2 * i]}) | ((unsigned){conv}({part[2 * i + 1]}) << 16))"
                        for i in range(per // 2)]
            lines.append(f"*(({vt}*)({ptr} + {p * per})) = make_{vt}({', '.join(part)});")
        return lines

    # -- atomics: atomic_rmw{kind} is spelled by atomic_<kind> --
    def atomic_rmw(self, em, kind, dt, ptr, val):
        spell = getattr(self, f"atomic_{kind}", None)
        if spell is None:
            raise NotImplementedError(f"{self.name}: atomic_rmw{{kind={kind}}} has no spelling")
        return spell(em, dt, ptr, val)

    # -- matrix instruction: lines, or None for the FMA loop --
    def mma(self, em, op):
        return None


class CUDA(Dialect):
    name = "cuda"
    template = "cuda.j2"
    fn_qual = "static __device__ __forceinline__"

    def atomic_add(self, em, dt, ptr, val):
        if dt is D.float16:
            return f"atomicAdd((__half*){ptr}, __float2half_rn({val}))"
        if dt is D.bfloat16:
            return f"atomicAdd((__nv_bfloat16*){ptr}, __float2bfloat16_rn({val}))"
        if dt.bits == 64 and dt.is_int:
            return f"atomicAdd((unsigned long long*){ptr}, (unsigned long long)({val}))"
        return f"atomicAdd({ptr}, {val})"

    def mma(self, em, op):
        """Tensor cores through WMMA (fp16/bf16 -> fp32, int8 -> int32), 16x16x16 tiles, one warp per output
        tile; operands and the accumulator are staged in shared memory around the matrix instruction."""
        a, b, acc = op.operands
        (M, K), N = a.shape, b.shape[1]
        if M % 16 or N % 16 or K % 16:
            return None
        frag = {"float16": ("__half", "__float2half_rn({})"), "bfloat16": ("__nv_bfloat16", "__float2bfloat16_rn({})"),
                "int8": ("signed char", "(signed char)({})")}.get(a.dtype.name)
        if frag is None:
            return None
        ft, conv = frag
        em.features.add("wmma")
        em.matrix_ops.append("wmma")
        cft = "float" if acc.dtype.is_float else "int"
        out, sa, sb, sc = em.mma_operands(op, ft, lambda x: conv.format(x))
        warps = em.T // 32
        tiles_n = N // 16
        out += [
            "{",
            "  const int _warp = tk_tid >> 5;",
            f"  for (int _t = _warp; _t < {(M // 16) * tiles_n}; _t += {warps}) {{",
            f"    const int _tm = _t / {tiles_n}, _tn = _t % {tiles_n};",
            f"    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, {cft}> _fc;",
            f"    nvcuda::wmma::load_matrix_sync(_fc, {sc} + _tm * {16 * N} + _tn * 16, {N}, nvcuda::wmma::mem_row_major);",
            "    #pragma unroll",
            f"    for (int _kk = 0; _kk < {K}; _kk += 16) {{",
            f"      nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, {ft}, nvcuda::wmma::row_major> _fa;",
            f"      nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, {ft}, nvcuda::wmma::row_major> _fb;",
            f"      nvcuda::wmma::load_matrix_sync(_fa, {sa} + _tm * {16 * K} + _kk, {K});",
            f"      nvcuda::wmma::load_matrix_sync(_fb, {sb} + _kk * {N} + _tn * 16, {N});",
            "      nvcuda::wmma::mma_sync(_fc, _fa, _fb, _fc);",
            "    }",
            f"    nvcuda::wmma::store_matrix_sync({sc} + _tm * {16 * N} + _tn * 16, _fc, {N}, nvcuda::wmma::mem_row_major);",
            "  }",
            "}",
        ]
        return em.mma_result(op, sc, out)


class HIP(Dialect):
    name = "hip"
    template = "hip.j2"
    warp_size = 64
    fn_qual = "static __device__ inline"

    def atomic_add(self, em, dt, ptr, val):
        if dt in (D.float16, D.bfloat16):
            return f"tk_atomic_add_16({ptr}, {val}, {1 if dt is D.bfloat16 else 0})"
        if dt.bits == 64 and dt.is_int:
            return f"atomicAdd((unsigned long long*){ptr}, (unsigned long long)({val}))"
        return f"atomicAdd({ptr}, {val})"

    def mma(self, em, op):
        """MFMA on CDNA2 (gfx90a): v_mfma_f32_16x16x16f16 / _bf16_1k, one wave (64 lanes) per 16x16 output tile.
        Lane l holds A[l%16][4(l/16)+i], B[4(l/16)+i][l%16] and D[4(l/16)+i][l%16], i = 0..3."""
        a, b, acc = op.operands
        (M, K), N = a.shape, b.shape[1]
        if M % 16 or N % 16 or K % 16 or a.dtype not in (D.float16, D.bfloat16):
            return None
        em.features.add("mfma")
        em.matrix_ops.append("mfma")
        if a.dtype is D.float16:
            ft, conv, vt, fn = "_Float16", "(_Float16)({})", "tk_h4", "__builtin_amdgcn_mfma_f32_16x16x16f16"
        else:
            ft, conv, vt, fn = "tk_i16", "(tk_i16)tk_f2b({})", "tk_s4", "__builtin_amdgcn_mfma_f32_16x16x16bf16_1k"
        out, sa, sb, sc = em.mma_operands(op, ft, lambda x: conv.format(x))
        waves = em.T // 64
        tiles_n = N // 16
        out += [
            "{",
            "  const int _wave = tk_tid >> 6, _lane = tk_tid & 63;",
            "  const int _lr = _lane & 15, _lk = (_lane >> 4) * 4;",
            f"  for (int _t = _wave; _t < {(M // 16) * tiles_n}; _t += {waves}) {{",
            f"    const int _tm = _t / {tiles_n}, _tn = _t % {tiles_n};",
            "    tk_f4 _c;",
            f"    for (int _q = 0; _q < 4; ++_q) _c[_q] = {sc}[(_tm * 16 + _lk + _q) * {N} + _tn * 16 + _lr];",
            f"    for (int _kk = 0; _kk < {K}; _kk += 16) {{",
            f"      {vt} _a, _b;",
            f"      for (int _q = 0; _q < 4; ++_q) {{ _a[_q] = {sa}[(_tm * 16 + _lr) * {K} + _kk + _lk + _q]; "
            f"_b[_q] = {sb}[(_kk + _lk + _q) * {N} + _tn * 16 + _lr]; }}",
            f"      _c = {fn}(_a, _b, _c, 0, 0, 0);",
            "    }",
            f"    for (int _q = 0; _q < 4; ++_q) {sc}[(_tm * 16 + _lk + _q) * {N} + _tn * 16 + _lr] = _c[_q];",
            "  }",
            "}",
        ]
        return em.mma_result(op, sc, out)


class OpenCL(Dialect):
    name = "opencl"
    template = "opencl.j2"
    global_qual = "__global "
    barrier = "barrier(CLK_LOCAL_MEM_FENCE);"
    vector_needs_alignment = False  # vloadn/vstoren need only element alignment
    pad_branch_barriers = True
    # A store in a loop body whose parallel region began at an earlier barrier was dropped by PoCL 3.0's
    # work-group loops (every element of a selective scan's output, fp16, 4 warps; right at -cl-opt-disable
    # or with a barrier just before the store). tests/test_opencl_regressions.py reproduces it.
    barrier_before_loop_stores = True
    # The codes of a staged packed window were read under `if (_ch < chunks)` when the tile has fewer chunks
    # than threads; PoCL 3.0's loopvec work-group method then lost them across the next barrier (a W2 group-48
    # GEMM at 8 warps: every output wrong; right at -cl-opt-disable or POCL_WORK_GROUP_METHOD=loops). Every
    # thread extracts instead, idle ones from word 0. tests/test_opencl_regressions.py reproduces it.
    unguarded_window_extract = True

    def local_ptr(self, ctype):
        return f"__local {ctype}*"

    def program_id(self, axis):
        return f"(int)get_group_id({axis})"

    def num_programs(self, axis):
        return f"(int)get_num_groups({axis})"

    def vector_type(self, dt, v):
        if v not in (2, 4, 8) or dt.is_bool:
            return None
        st = stype(dt)
        if dt is D.float16:
            return f"float{v}"
        names = {"float": "float", "int": "int", "unsigned": "uint", "tk_u16": "ushort", "tk_i16": "short",
                 "double": "double", "tk_i64": "long", "tk_u64": "ulong"}
        if st not in names or v * self.sizeof(st) > 32:
            return None
        return f"{names[st]}{v}"

    def vload(self, dt, v, ptr, dests):
        vt = self.vector_type(dt, v)
        if dt is D.float16:
            lines = [f"const {vt} _v = vload_half{v}(0, (__global const half*){ptr});"]
        else:
            lines = [f"const {vt} _v = vload{v}(0, {ptr});"]
        conv = "tk_b2f" if dt is D.bfloat16 else ""
        lines += [f"{d} = {conv}(_v.s{j});" for j, d in enumerate(dests)]
        return lines

    def vstore(self, dt, v, ptr, vals):
        vt = self.vector_type(dt, v)
        if dt is D.float16:
            return [f"vstore_half{v}_rte(({vt})({', '.join(vals)}), 0, (__global half*){ptr});"]
        if dt is D.bfloat16:
            vals = [f"tk_f2b({x})" for x in vals]
        return [f"vstore{v}(({vt})({', '.join(vals)}), 0, {ptr});"]

    def atomic_add(self, em, dt, ptr, val):
        if dt in (D.int32, D.uint32):
            return f"atomic_add({ptr}, {val})"
        if dt is D.float32:
            return f"tk_atomic_add_f32_cas({ptr}, {val})"
        if dt in (D.float16, D.bfloat16):
            return f"tk_atomic_add_16({ptr}, {val}, {1 if dt is D.bfloat16 else 0})"
        if dt.bits == 64:
            em.features.add("int64_atomics")
            if dt.is_int:
                return f"atom_add((volatile __global {'long' if dt.kind == 'int' else 'ulong'}*){ptr}, {val})"
            em.need("tk_atomic_add_f64", (
                "static inline void tk_atomic_add_f64(volatile __global double* p, double v) { "
                "volatile __global ulong* w = (volatile __global ulong*)p; ulong old = *w, assumed; "
                "do { assumed = old; old = atom_cmpxchg(w, assumed, as_ulong(as_double(assumed) + v)); } "
                "while (old != assumed); }"))
            return f"tk_atomic_add_f64({ptr}, {val})"
        raise NotImplementedError(f"opencl atomic_add of {dt}")


DIALECTS = {"cuda": CUDA(), "hip": HIP(), "opencl": OpenCL()}
