"""``mma``: the dialect's matrix instruction where it has one, else a k-outer FMA loop over shared memory."""
from __future__ import annotations

from .types import rtype
from .values import Val


class MmaMixin:
    def op_mma(self, op):
        out = self.d.mma(self, op)
        if out is not None:
            return out
        self.matrix_ops.append("fma")
        return self.mma_fma(op)

    def mma_fma(self, op):
        """acc + a @ b as a k-outer FMA loop over shared-memory operands (each thread its own acc elements)."""
        a, b, acc = op.operands
        r = op.results[0]
        (M, K), N = a.shape, b.shape[1]
        act, bct = rtype(a.dtype), rtype(b.dtype)
        rct = rtype(r.dtype)
        oa, ob = self.smem_alloc([M * K * self.d.sizeof(act), K * N * self.d.sizeof(bct)])
        out = []
        sa, sb = self.fresh("mma_a"), self.fresh("mma_b")
        out.append(f"{self.d.local_ptr(act)} {sa} = {self.smem_ptr(act, oa)};")
        out.append(f"{self.d.local_ptr(bct)} {sb} = {self.smem_ptr(bct, ob)};")
        self.barrier(out)
        self.to_smem(a, sa, out)
        self.to_smem(b, sb, out)
        self.barrier(out)
        name = self.name_of(r)
        out.append(self.declare_reg(name, r.dtype, r.shape))
        out += self.foreach(r.shape, [f"{name}[_s] = {self.at(acc, self.coords_list(r.shape), r.shape)};"])
        if r.dtype.is_float:
            upd = f"{name}[_s] = {name}[_s] + ({rct}){sa}[_c0 * {K} + _k] * ({rct}){sb}[_k * {N} + _c1];"
        else:
            upd = (f"{name}[_s] = ({rct})((unsigned){name}[_s] + (unsigned)((int){sa}[_c0 * {K} + _k] * "
                   f"(int){sb}[_k * {N} + _c1]));")
        out += [f"for (int _k = 0; _k < {K}; ++_k) {{"] + ["  " + l for l in self.foreach(r.shape, [upd])] + ["}"]
        self.vals[r] = Val("reg", name)
        return out

    # -- shared by the dialects' matrix-instruction paths (Dialect.mma) --
    def mma_operands(self, op, smem_ctype, convert):
        """Stage a, b (as ``smem_ctype``, through ``convert``) and acc (fp32/int32) in shared memory.
        Returns (lines, a buffer, b buffer, c buffer)."""
        a, b, acc = op.operands
        (M, K), N = a.shape, b.shape[1]
        cct = rtype(acc.dtype)
        size = self.d.sizeof
        oa, ob, oc = self.smem_alloc([M * K * size(smem_ctype), K * N * size(smem_ctype), M * N * size(cct)])
        out = []
        sa, sb, sc = self.fresh("mma_a"), self.fresh("mma_b"), self.fresh("mma_c")
        out.append(f"{self.d.local_ptr(smem_ctype)} {sa} = {self.smem_ptr(smem_ctype, oa)};")
        out.append(f"{self.d.local_ptr(smem_ctype)} {sb} = {self.smem_ptr(smem_ctype, ob)};")
        out.append(f"{self.d.local_ptr(cct)} {sc} = {self.smem_ptr(cct, oc)};")
        self.barrier(out)
        self.to_smem(a, sa, out, convert=convert)
        self.to_smem(b, sb, out, convert=convert)
        self.to_smem(acc, sc, out)
        self.barrier(out)
        return out, sa, sb, sc

    def mma_result(self, op, sc, out):
        """After the matrix instruction wrote the accumulator back to ``sc``: read it into the result."""
        r = op.results[0]
        self.barrier(out)
        name = self.name_of(r)
        out.append(self.declare_reg(name, r.dtype, r.shape))
        out += self.foreach(r.shape, [f"{name}[_s] = {sc}[_e];"])
        self.vals[r] = Val("reg", name)
        return out
