"""AOT details: 64-bit element offsets for storage of 2**31 bytes or more; signature strings as example args."""
import torch

import tilekit as tk
from tilekit.ir import TensorType
from tilekit.kernel import _arg_key, _arg_spec


@tk.kernel
def copy_rows(X, Y, BM: tk.constexpr = 16, BN: tk.constexpr = 64):
    tile = tk.load(X, (tk.program_id(0) * BM, 0), (BM, BN))
    tk.store(Y, (tk.program_id(0) * BM, 0), tile)


def test_large_storage_is_part_of_the_specialization():
    small = torch.empty(100, 64, device="meta")
    big = torch.empty(2**16, 2**14, dtype=torch.float16, device="meta")  # exactly 2**31 bytes
    assert _arg_spec("X", small) == TensorType(tk.float32, 2)
    assert _arg_spec("X", big).large
    assert _arg_key(small) != _arg_key(big.float()[:100])  # a small view of large storage is still large


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
