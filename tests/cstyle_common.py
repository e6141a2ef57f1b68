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


def assert_compile_with_nvrtc(sources, arch="sm_90a"):
    """Each CUDA source compiles to a cubin with NVRTC (skips, saying why, where NVRTC is missing)."""
    import pytest
    nvrtc = pytest.importorskip("tilekit.backends.cuda.nvrtc")
    ok, why = nvrtc.available()
    if not ok:
        pytest.skip(f"NVRTC unavailable: {why}")
    for src in sources:
        cubin, log, _ = nvrtc.compile_source(src, arch)
        assert cubin[:4] == b"\x7fELF", log


def assert_compile_with_hipcc(sources, arch="gfx90a"):
    """Each HIP source compiles to a code object with hipcc (skips, saying how to install it, without it)."""
    import pytest
    from tilekit.backends.hip import compile_source, hipcc_path
    if hipcc_path() is None:
        pytest.skip("hipcc is not on PATH (apt-get install hipcc libamdhip64-dev rocm-device-libs)")
    for src in sources:
        binary, _, cmd = compile_source(src, arch)
        assert binary[:4] == b"\x7fELF", cmd
