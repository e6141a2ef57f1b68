"""HIP C++ from the C-style emitter compiles with hipcc for gfx90a (no GPU), and the default matmul uses
MFMA with no spills."""
import shutil

import pytest
import torch

from cstyle_common import corpus_specializations
from tilekit.backends.hip import compile_source, hipcc_path
from tilekit.examples import matmul

pytestmark = pytest.mark.skipif(hipcc_path() is None, reason="hipcc is not on PATH "
                                "(apt-get install hipcc libamdhip64-dev rocm-device-libs)")

# one dtype per case keeps hipcc (about a second per kernel) within budget; NVRTC covers every dtype
SPECS = corpus_specializations(dtypes_per_case=2)


@pytest.mark.parametrize("spec", SPECS, ids=[s[0] for s in SPECS])
def test_corpus_kernel_compiles_for_gfx90a(spec):
    _, kernel, args, cfg = spec
    src = kernel.source("hip", *args, **cfg)
    binary, asm, cmd = compile_source(src, "gfx90a")
    assert binary[:4] == b"\x7fELF" and "gfx90a" in asm, cmd


def meta(*shape, dtype=torch.float16):
    return torch.empty(*shape, dtype=dtype, device="meta")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_matmul_uses_mfma_without_spills(dtype):
    art = matmul.compile("gfx90a", meta(1000, 1000, dtype=dtype), meta(1000, 1000, dtype=dtype),
                         meta(1000, 1000, dtype=torch.float32), backend="hip")
    assert art.backend == "hip" and art.instructions["mfma"] > 0, art.report()
    assert art.resources["spills"] == 0 and art.resources["vgprs"] > 0, art.report()
    assert "v_mfma_f32_16x16x16" in art.asm["amdgcn"]
    assert art.instructions["widest_global_load_bits"] == 128, art.report()
