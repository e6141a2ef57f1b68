"""Tensor views whose memory does not say what they hold: torch's lazily negated/conjugated views, and
outputs whose elements share memory. The launch layer handles them the same way for every backend: a
read-only lazy view is resolved, a written one is rejected, and a written tensor with internal overlap is
rejected (inputs may overlap: a stride-0 broadcast input is fine)."""
import itertools

import pytest
import torch

import tilekit as tk
from tilekit.kernel import internal_overlap

BACKENDS = ["reference", "triton", "opencl"]


def _backend_ok(name):
    from tilekit.backends import availability
    ok, why = availability()[name]
    if not ok:
        pytest.skip(f"{name} is not available here: {why}")


@tk.kernel
def axpy(X, Y, Out, a, B: tk.constexpr = 32):
    p = tk.program_id(0)
    x = tk.load(X, (p * B,), (B,))
    y = tk.load(Y, (p * B,), (B,))
    tk.store(Out, (p * B,), x * a + y)


@tk.kernel
def add_rows(X, Out, BM: tk.constexpr = 8, BN: tk.constexpr = 16):
    pm = tk.program_id(0)
    x = tk.load(X, (pm * BM, 0), (BM, BN))
    tk.store(Out, (pm * BM, 0), x + 1.0)


@tk.kernel
def accumulate(X, Out, B: tk.constexpr = 32):
    p = tk.program_id(0)
    tk.atomic_add(Out, (p * B,), tk.load(X, (p * B,), (B,)))


def _lazily_negated(n, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.complex(torch.randn(n, generator=g), torch.randn(n, generator=g))
    v = z.conj().imag
    assert v.is_neg() and v.dtype == torch.float32
    return v


@pytest.mark.parametrize("backend", BACKENDS)
def test_lazily_negated_input_is_read_negated(backend):
    _backend_ok(backend)
    n = 45
    X = _lazily_negated(n, 1)
    Y = torch.randn(n)
    for _ in range(2):  # first (slow) and warm launch
        Out = torch.full((n,), float("nan"))
        axpy[(2,)](X, Y, Out, 2.0, backend=backend)
        want = X.resolve_neg().double() * 2.0 + Y.double()
        torch.testing.assert_close(Out.double(), want, rtol=1e-6, atol=1e-6)
    # the same kernel with a plain tensor afterwards is not resolved or negated
    Xp = torch.randn(n)
    Out = torch.empty(n)
    axpy[(2,)](Xp, Y, Out, 2.0, backend=backend)
    torch.testing.assert_close(Out, Xp * 2 + Y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lazily_negated_output_is_rejected(backend):
    _backend_ok(backend)
    n = 45
    z = torch.complex(torch.randn(n), torch.randn(n))
    out = z.conj().imag
    before = z.clone()
    with pytest.raises(ValueError, match=r"argument 'Out' is a view with torch's lazy negation bit"):
        axpy[(2,)](torch.randn(n), torch.randn(n), out, 2.0, backend=backend)
    assert torch.equal(z, before)  # nothing ran


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make", [
    lambda: torch.zeros(1).expand(45),                                  # stride 0
    lambda: torch.zeros(60).as_strided((45,), (1,)).as_strided((45,), (0,)),
], ids=["expand", "as_strided-0"])
def test_stride0_output_is_rejected(backend, make):
    _backend_ok(backend)
    out = make()
    with pytest.raises(ValueError, match=r"argument 'Out' .* share memory"):
        axpy[(2,)](torch.randn(45), torch.randn(45), out, 2.0, backend=backend)
    assert torch.equal(out, torch.zeros(45))


@pytest.mark.parametrize("backend", BACKENDS)
def test_overlapping_as_strided_output_is_rejected(backend):
    _backend_ok(backend)
    base = torch.zeros(46)
    out = base.as_strided((11, 16), (3, 1))  # rows overlap: row i and row i+1 share 13 elements
    with pytest.raises(ValueError, match=r"argument 'Out' \(shape \(11, 16\), strides \(3, 1\)\).*share memory"):
        add_rows[(2,)](torch.randn(11, 16), out, backend=backend)
    assert torch.equal(base, torch.zeros(46))


@pytest.mark.parametrize("backend", BACKENDS)
def test_overlap_is_checked_on_every_launch_not_only_the_first(backend):
    """Overlap is a matter of strides, which the specialization key leaves out: a warm launch with the
    same key and an overlapping output must be rejected too."""
    _backend_ok(backend)
    X = torch.randn(11, 16)
    good = torch.zeros(11, 32)[:, ::2]  # strided, not overlapping
    add_rows[(2,)](X, good, backend=backend)
    torch.testing.assert_close(good, X + 1)
    bad = torch.zeros(46).as_strided((11, 16), (3, 1))
    with pytest.raises(ValueError, match="share memory"):
        add_rows[(2,)](X, bad, backend=backend)
    with pytest.raises(ValueError, match="share memory"):
        add_rows[(2,)](X, torch.zeros(16).expand(11, 16), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_atomic_add_output_with_overlap_is_rejected(backend):
    _backend_ok(backend)
    with pytest.raises(ValueError, match="argument 'Out'.*share memory"):
        accumulate[(2,)](torch.randn(64), torch.zeros(1).expand(64), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stride0_inputs_stay_supported(backend):
    _backend_ok(backend)
    row = torch.randn(16)
    X = row.expand(11, 16)          # stride (0, 1)
    assert X.stride() == (0, 1)
    out = torch.empty(11, 16)
    add_rows[(2,)](X, out, backend=backend)
    torch.testing.assert_close(out, (row + 1).expand(11, 16))
    n = 45
    Y = torch.randn(n)
    Out = torch.empty(n)
    axpy[(2,)](torch.tensor(1.5).expand(n), Y, Out, 2.0, backend=backend)
    torch.testing.assert_close(Out, 1.5 * 2.0 + Y)


@pytest.mark.parametrize("shape,stride,want", [
    ((4, 5), (5, 1), False),
    ((4, 5), (1, 4), False),
    ((4, 5), (4, 1), True),        # row i's last element is row i+1's first
    ((3, 2), (2, 3), False),       # interleaved, offsets 0 2 4 3 5 7: distinct
    ((3, 3), (2, 3), False),       # interleaved, offsets 0 3 6 2 5 8 4 7 10: distinct
    ((3, 3), (2, 2), True),        # 0+2 == 2+0
    ((2, 3, 4), (0, 4, 1), True),
    ((1, 5), (0, 1), False),       # a size-1 dim's stride does not matter
    ((0, 5), (0, 0), False),       # no elements
    ((5,), (0,), True),
])
def test_internal_overlap_decides_exactly(shape, stride, want):
    offsets = {sum(i * s for i, s in zip(idx, stride)) for idx in itertools.product(*map(range, shape))}
    numel = 1
    for s in shape:
        numel *= s
    truth = len(offsets) != numel
    assert truth is want
    assert internal_overlap(shape, stride) is want
