"""Control flow: ``for`` with loop-carried values, ``if`` with results, and yields between them."""
from __future__ import annotations

from .types import rtype
from .values import Val


class ControlMixin:
    def declare_like(self, v, name):
        if v.shape == ():
            return f"{rtype(v.dtype)} {name};"
        return self.declare_reg(name, v.dtype, v.shape)

    def assign(self, dst_name, src, out):
        """Lines copying value ``src`` into the variable/array ``dst_name`` (of src's shape)."""
        if src.shape == ():
            out.append(f"{dst_name} = {self.vals[src].name};")
            return
        cs = self.coords_list(src.shape)
        out += self.foreach(src.shape, [f"{dst_name}[_s] = {self.at(src, cs, src.shape)};"])

    def op_for(self, op):
        body = op.regions[0]
        out = []
        carried = []
        for res, arg, init in zip(op.results, body.args[1:], op.operands[3:]):
            name = self.fresh(res.name or arg.name or "carry")
            out.append(self.declare_like(res, name))
            self.assign(name, init, out)
            kind = "scalar" if res.shape == () else "reg"
            self.vals[res] = Val(kind, name)
            self.vals[arg] = Val(kind, name)
            carried.append(name)
        start, stop, step = (self.vals[v].name for v in op.operands[:3])
        iv = body.args[0]
        ivn = self.name_of(iv)
        self.vals[iv] = Val("scalar", ivn)
        sv = op.operands[2]
        if sv.owner is not None and sv.owner.name == "const":
            cond = f"{ivn} < {stop}" if sv.owner.attrs["value"] > 0 else f"{ivn} > {stop}"
        else:
            cond = f"({step} > 0 ? {ivn} < {stop} : {ivn} > {stop})"
        self.scopes.append({})
        self.loop_depth += 1
        inner = self.block(body)
        self.loop_depth -= 1
        inner += self.yield_into(body.terminator.operands, carried, body.args[1:])
        self.scopes.pop()
        out.append(f"for (int {ivn} = {start}; {cond}; {ivn} += {step}) {{")
        out += ["  " + l for l in inner]
        out.append("}")
        return out

    def yield_into(self, values, names, args):
        out = []
        direct, staged = [], []
        for v, n, a in zip(values, names, args):
            if v is a:
                continue
            k = self.vals[v]
            hazard = k.kind == "virtual" or (k.name in names and k.name != n)
            (staged if hazard else direct).append((v, n))
        temps = []
        for v, n in staged:
            t = self.fresh("next")
            out.append(self.declare_like(v, t))
            self.assign(t, v, out)
            temps.append((t, n, v))
        for v, n in direct:
            if self.vals[v].kind == "reg" and self.vals[v].name == n:
                continue
            self.assign(n, v, out)
        for t, n, v in temps:
            if v.shape == ():
                out.append(f"{n} = {t};")
            else:
                out += self.foreach(v.shape, [f"{n}[_s] = {t}[_s];"])
        return out

    def op_if(self, op):
        out = []
        names = []
        for res in op.results:
            name = self.name_of(res)
            out.append(self.declare_like(res, name))
            self.vals[res] = Val("scalar" if res.shape == () else "reg", name)
            names.append(name)
        cond = self.vals[op.operands[0]].name
        bodies = []
        for region in op.regions:
            self.scopes.append({})
            inner = self.block(region)
            for v, n in zip(region.terminator.operands, names):
                self.assign(n, v, inner)
            self.scopes.pop()
            bodies.append(inner)
        if self.d.pad_branch_barriers and len(bodies) == 2:
            # Both branches pass the same barriers: PoCL races (under load, across work-groups) when one side
            # of a uniform branch has barriers and the other has none. The extra barriers cost nothing else.
            counts = [sum(l.count(self.d.barrier) for l in b) for b in bodies]
            for i, b in enumerate(bodies):
                if counts[i] < max(counts):
                    bodies[i] = [self.d.barrier] * (max(counts) - counts[i]) + b
        for i, inner in enumerate(bodies):
            out.append(f"if ({cond}) {{" if i == 0 else "} else {")
            out += ["  " + l for l in inner]
        out.append("}")
        if self.d.pad_branch_barriers and any(self.d.barrier in l for b in bodies for l in b):
            # PoCL's optimizer miscompiles barriers under a uniform branch (silent wrong values and heap
            # corruption at launch, tests/test_opencl_regressions.py): such kernels build unoptimized.
            self.features.add("barrier_in_branch")
            # And a barrier where the branches join. Without it PoCL (3.0 and 3.1, pthread device) sometimes
            # let a work-group read branch results (registers assigned after the branch's last barrier) that
            # were wrong: whole tiles, only with more than one worker thread, and every time with
            # POCL_AFFINITY=1. tests/test_opencl_corpus.py's matmul epilogue reproduced it.
            out.append(self.d.barrier)
        return out
