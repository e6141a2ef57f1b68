"""kernel.last_launch_stats: programs, loop iterations, and elements/bytes per tensor parameter, counted by the
reference executor (masked-off elements not counted). Every expected number below is worked out by hand."""
import torch

import tilekit as tk


@tk.kernel
def rowsum(X, Out, BN: tk.constexpr = 8):
    M, N = X.shape
    r = tk.program_id(0)
    acc = tk.zeros((1, BN), tk.float32)
    for k in tk.range(0, N, BN):
        acc += tk.load(X, (r, k), (1, BN)).to(tk.float32)
    tk.store(Out, (r,), tk.sum(acc, axis=1))


@tk.kernel
def scatter_packed(W, Idx, Acc, n, BN: tk.constexpr = 16):
    """A packed read, a masked gather of indices, and an atomic add (counted as a load and a store)."""
    rows = tk.arange(4)
    valid = rows < n
    i = tk.load(Idx, (rows,), (4,), mask=valid)
    w = tk.load(W, (tk.program_id(0), 0), (1, BN)).to(tk.float32)
    tk.atomic_add(Acc, (i, 0), tk.broadcast_to(w, (4, BN)), mask=valid[:, None])


def test_counts_of_a_looped_row_sum():
    x = torch.randn(3, 20).half()
    out = torch.zeros(3)
    rowsum[(3,)](x, out, backend="reference")
    s = rowsum.last_launch_stats
    assert s.programs == 3
    assert s.loop_iterations == 3 * 3                    # cdiv(20, 8) iterations in each of 3 programs
    assert s.tensors["X"].elements_loaded == 3 * 20      # the 4 masked tail columns of each row are not counted
    assert s.tensors["X"].bytes_loaded == 3 * 20 * 2     # fp16
    assert s.tensors["X"].elements_stored == 0
    assert s.tensors["Out"].elements_stored == 3 and s.tensors["Out"].bytes_stored == 12
    assert s.tensors["Out"].elements_loaded == 0
    assert s.bytes_loaded == 120 and s.bytes_stored == 12
    torch.testing.assert_close(out, x.float().sum(1), rtol=1e-3, atol=1e-3)


def test_counts_of_packed_masked_and_atomic_traffic():
    w = torch.randint(-8, 8, (2, 10))
    packed = tk.pack(w, tk.int4)
    idx = torch.tensor([1, 0, 1], dtype=torch.int32)
    acc = torch.zeros(2, 10)
    scatter_packed[(2,)](packed, idx, acc, 3, backend="reference")
    s = scatter_packed.last_launch_stats
    assert s.programs == 2 and s.loop_iterations == 0
    assert s.tensors["W"].elements_loaded == 2 * 10        # 10 of 16 columns exist, one row per program
    assert s.tensors["W"].bytes_loaded == 2 * 10 * 0.5     # 4 bits a code
    assert s.tensors["Idx"].elements_loaded == 2 * 3       # row 3 is masked off
    # 3 valid rows x 10 columns per program, each read and written by the atomic add
    assert s.tensors["Acc"].elements_stored == s.tensors["Acc"].elements_loaded == 2 * 30
    assert s.tensors["Acc"].bytes_stored == 2 * 30 * 4
    want = torch.zeros(2, 10)
    for r in range(2):
        for i in idx.tolist():
            want[i] += w[r].float()
    torch.testing.assert_close(acc, want)


def test_stats_are_per_launch_and_only_from_the_reference():
    x = torch.randn(1, 8)
    out = torch.zeros(1)
    rowsum[(1,)](x, out, backend="reference")
    first = rowsum.last_launch_stats
    assert first.programs == 1 and first.loop_iterations == 1 and first.tensors["X"].elements_loaded == 8
    rowsum[(1,)](x, out, backend="reference")
    assert rowsum.last_launch_stats is not first and rowsum.last_launch_stats == first
    rowsum[(1,)](x, out, backend="triton")
    assert rowsum.last_launch_stats is None               # real backends do not count
