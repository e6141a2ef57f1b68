"""Shared by the C-backend compile tests: every corpus kernel as one specialization per (case, dtype)."""
import torch

import corpus
import tilekit as tk


def corpus_specializations(dtypes_per_case=None):
    """[(id, kernel, positional args, constexpr kwargs)] -- one per (case, dtype), mid-range ragged shapes."""
    out = []
    for case in corpus.CASES:
        dts = case.dtypes if dtypes_per_case is None else case.dtypes[:dtypes_per_case]
        for dt in dts:
            variant = tk.float6_e3m2 if case.name == "dequant_groups" else case.variants[-1]
            shape = tuple(max(lo, (lo + hi) // 2) | 1 for lo, hi in case.dims)
            args = case.make_inputs(torch.Generator().manual_seed(0), shape, dt, variant)
            cfg = dict(case.configs_for(shape)[0])
            if "G" in args:
                cfg["G"] = args["G"]
            k = case.kernel
            pos = [args[p] for p in k.param_names if p in args and p not in k.constexpr_names]
            out.append((f"{case.name}-{str(dt).replace('torch.', '')}", k, pos, cfg))
    return out
