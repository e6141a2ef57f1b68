"""AOT details: 64-bit element offsets for tensors whose elements span 2**31 bytes or more; signature strings as example args."""
import torch

import tilekit as tk
from tilekit.ir import TensorType
from tilekit.kernel import _arg_key, _arg_spec


@tk.kernel
def copy_rows(X, Y, BM: tk.constexpr = 16, BN: tk.constexpr = 64):
    tile = tk.load(X, (tk.program_id(0) * BM, 0), (BM, BN))
    tk.store(Y, (tk.program_id(0) * BM, 0), tile)


def test_large_span_is_part_of_the_specialization():
    small = torch.empty(100, 64, device="meta")
    big = torch.empty(2**16, 2**14, dtype=torch.float16, device="meta")  # exactly 2**31 bytes
    assert _arg_spec("X", small) == TensorType(tk.float32, 2)
    assert _arg_spec("X", big).large
    assert not _arg_spec("X", big[:, :2**14 - 1]).large  # one element short of 2**31 bytes
    # what counts is the span the view addresses from its data pointer, not the storage under it
    assert _arg_key(big[:100]) == _arg_key(torch.empty(100, 2**14, dtype=torch.float16, device="meta"))
    two_rows = big[::2**16 - 1]  # rows 0 and 65535: 2 * 2**14 elements whose span is the whole 2**31 bytes
    assert not two_rows.is_contiguous() and _arg_spec("X", two_rows).large
    assert _arg_key(two_rows) != _arg_key(big[:2])


def test_large_tensors_index_in_64_bits():
    big = torch.empty(2**16, 2**14, dtype=torch.float16, device="meta")
    small = torch.empty(128, 64, dtype=torch.float16, device="meta")
    src_big = copy_rows.source("triton", big, big)
    src_small = copy_rows.source("triton", small, small)
    assert "tl.int64" in src_big and "tl.int64" not in src_small
    art = copy_rows.compile("sm_90", big, big)
    assert "mul.wide" in art.assembly or "mul.lo.s64" in art.assembly


def test_small_tensors_still_run_correctly():
    from tilekit.backends.triton import launch_unavailable_reason
    if launch_unavailable_reason():
        import pytest
        pytest.skip(launch_unavailable_reason())
    x = torch.randn(37, 50)
    y = torch.empty_like(x)
    copy_rows[(3,)](x, y, backend="triton")
    torch.testing.assert_close(y, x)


def test_compile_from_signature_strings():
    art = copy_rows.compile("sm_80", "fp16[1024,64]", "fp16[1024,64]")
    assert art.binary and art.resources["spills"] == 0
    import pytest
    with pytest.raises(ValueError, match="bad signature"):
        copy_rows.compile("sm_80", "fp16[10,x]", "fp16[10,10]")


@tk.kernel
def dequant_tile(W, Out, BK: tk.constexpr = 32, BN: tk.constexpr = 64):
    k0, n0 = tk.program_id(0) * BK, tk.program_id(1) * BN
    tk.store(Out, (k0, n0), tk.load(W, (k0, n0), (BK, BN)).to(tk.float16))


def test_packed_signature_strings_compile_for_every_target():
    from tilekit.kernel import example_from_signature
    p = example_from_signature("int3[4096,4096]")
    assert isinstance(p, tk.PackedTensor) and p.dtype is tk.int3 and p.shape == (4096, 4096)
    assert p.device.type == "meta" and tuple(p.words.shape) == (4096, 4096 * 3 // 32)
    assert example_from_signature("f4e2m1[8,33]").words.shape == (8, 5)       # short names too; 132 bits
    art = dequant_tile.compile("sm_90", "int3[4096,4096]", "fp16[4096,4096]")
    assert art.binary[:4] == b"\x7fELF" and art.resources["spills"] == 0, art.report()
    import pytest
    nvrtc = pytest.importorskip("tilekit.backends.cuda.nvrtc")
    if nvrtc.available()[0]:
        art = dequant_tile.compile("sm_90a", "int4[4096,4096]", "fp16[4096,4096]", backend="cuda")
        assert art.binary[:4] == b"\x7fELF", art.report()


def test_pack_output_mixes_with_meta_tensors_in_compile():
    """Regression: tk.pack output (CPU) beside meta tensors failed with 'tensors are on different devices'."""
    packed = tk.pack(torch.randint(-4, 4, (64, 100)), tk.int3)
    art = dequant_tile.compile("sm_80", packed, torch.empty(64, 100, dtype=torch.float16, device="meta"))
    assert art.binary[:4] == b"\x7fELF"
    meta = tk.PackedTensor.empty((64, 100), tk.int3, device="meta")
    assert packed.to("meta").words.shape == meta.words.shape
    dequant_tile.compile("sm_80", meta, torch.empty(64, 100, dtype=torch.float16, device="meta"))
    # a launch still refuses mixed devices
    import pytest
    with pytest.raises(ValueError, match="different devices"):
        dequant_tile[(2, 2)](packed, torch.empty(64, 100, dtype=torch.float16, device="meta"), backend="triton")
