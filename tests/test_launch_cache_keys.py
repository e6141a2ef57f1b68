"""What a compiled variant is keyed on: a launch must never run code compiled for different constexprs or
for an older @tk.func helper. Each test launches on one kernel object in a sequence that used to collide,
and compares with a fresh kernel object (no cache) or with torch."""
import math
import struct

import pytest
import torch

import tilekit as tk
from tilekit.kernel import Kernel

BACKENDS = ["reference", "triton"]


@tk.kernel
def mul_const(X, Y, C: tk.constexpr, B: tk.constexpr = 16):
    p = tk.program_id(0)
    x = tk.load(X, (p * B,), (B,))
    tk.store(Y, (p * B,), (x * C).to(Y.dtype))


def _fresh(k):
    return Kernel(k.fn)


def _general_variants(k):
    """The compiled variants' keys, less those an exact launcher compiled to share equal layouts."""
    return [key for key in k._cache
            if not any(getattr(t, "shape_of", None) or getattr(t, "strides_of", None) for _, t in key[0])]


def _ints():
    # 2**24 + 1 is exact in int32 arithmetic and rounds to 2**24 through fp32
    return torch.tensor([3, 2**24 + 1, -5, 7, 11, 2**24 + 3, 1, 0, 9, -2**24 - 1, 4, 6, 8, 10, 12, 14],
                        dtype=torch.int32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("order", [(1, 1.0, True), (True, 1.0, 1), (1.0, 1, True)], ids=str)
def test_int_float_bool_constexprs_are_different_variants(backend, order):
    """x * 1 stays int32; x * 1.0 computes in fp32 (2**24 + 1 rounds). Whichever comes first must not be
    reused for the others, on the warm path (positional and keyword) or the slow one."""
    k = _fresh(mul_const)
    X = _ints()
    for c in order:
        for call in (lambda Y: k[(1,)](X, Y, c, backend=backend), lambda Y: k[(1,)](X, Y, C=c, backend=backend)):
            Y = torch.full((16,), -1, dtype=torch.int32)
            call(Y)
            want = (X.double() * float(c)).to(torch.float32).to(torch.int32) if type(c) is float else X * int(c)
            assert torch.equal(Y, want), (c, Y, want)
        assert k.source(backend, X, Y, C=c) == _fresh(mul_const).source(backend, X, Y, C=c)
    assert len(_general_variants(k)) == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_int_and_equal_float_are_different_variants(backend):
    k = _fresh(mul_const)
    X = _ints()
    Yi, Yf = torch.empty(16), torch.empty(16)
    k[(1,)](X, Yi, 1 << 30, backend=backend)
    k[(1,)](X, Yf, float(1 << 30), backend=backend)
    assert torch.equal(Yi, (X.long() * (1 << 30)).to(torch.int32).to(torch.float32))  # int32 wraps around
    assert torch.equal(Yf, X.to(torch.float32) * float(1 << 30))


@pytest.mark.parametrize("backend", BACKENDS)
def test_negative_zero_is_not_zero(backend):
    k = _fresh(mul_const)
    X = torch.rand(16) + 0.5
    Ypos, Yneg = torch.empty(16), torch.empty(16)
    k[(1,)](X, Ypos, 0.0, backend=backend)
    k[(1,)](X, Yneg, -0.0, backend=backend)
    assert not torch.signbit(Ypos).any()
    assert torch.signbit(Yneg).all() and torch.equal(Yneg, X * -0.0)


def test_nan_constexpr_hits_the_cache(count_builds):
    k = _fresh(mul_const)
    X = torch.randn(16)
    for _ in range(3):  # float("nan") is a new object each time, and nan != nan
        Y = torch.zeros(16)
        k[(1,)](X, Y, float("nan"), backend="reference")
        assert torch.isnan(Y).all()
        Y = torch.zeros(16)
        k[(1,)](X, Y, C=float("nan"), backend="reference")
        assert torch.isnan(Y).all()
    assert len(count_builds) == 1 and len(k._cache) == 1
    # a nan with another bit pattern is another constant; it is keyed (and compiled) apart
    other_nan = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]
    assert math.isnan(other_nan)
    k[(1,)](X, torch.zeros(16), other_nan, backend="reference")
    assert len(count_builds) == 2


@tk.kernel
def pick_first(X, Y, PAIR: tk.constexpr, B: tk.constexpr = 16):
    p = tk.program_id(0)
    x = tk.load(X, (p * B,), (B,))
    tk.store(Y, (p * B,), (x * PAIR[0]).to(Y.dtype))


def test_tuple_constexprs_key_their_elements_by_type():
    k = _fresh(pick_first)
    X = _ints()
    Yi, Yf = torch.empty(16, dtype=torch.int32), torch.empty(16, dtype=torch.int32)
    k[(1,)](X, Yi, (1, 2), backend="reference")
    k[(1,)](X, Yf, (1.0, 2), backend="reference")
    assert torch.equal(Yi, X)
    assert torch.equal(Yf, X.to(torch.float32).to(torch.int32))
    assert not torch.equal(Yi, Yf)


def test_launch_option_values_are_keyed_by_type(count_builds):
    k = _fresh(mul_const)
    X = torch.randn(16)
    k[(1,)](X, torch.empty(16), 2.0, backend="reference", num_warps=4)
    k[(1,)](X, torch.empty(16), 2.0, backend="reference", num_warps=4.0)
    assert len(k._cache) == 2


# ---- @tk.func helpers --------------------------------------------------------------------------------------

@tk.func
def bump(x):
    return x + 1.0


@tk.func
def bump_by_two(x):
    return x + 2.0


@tk.func
def bump_twice(x):
    return bump(bump(x))


@tk.kernel
def calls_bump(X, Y, B: tk.constexpr = 16):
    p = tk.program_id(0)
    tk.store(Y, (p * B,), bump(tk.load(X, (p * B,), (B,))))


@tk.kernel
def calls_bump_twice(X, Y, B: tk.constexpr = 16):
    p = tk.program_id(0)
    tk.store(Y, (p * B,), bump_twice(tk.load(X, (p * B,), (B,))))


@pytest.mark.parametrize("backend", BACKENDS)
def test_redefined_helper_recompiles(backend, monkeypatch):
    k = _fresh(calls_bump)
    X = torch.randn(20)
    Y = torch.empty(20)
    k[(2,)](X, Y, backend=backend)
    assert torch.equal(Y, X + 1)
    old_hash = k.source_hash
    monkeypatch.setitem(globals(), "bump", bump_by_two)  # what redefining `bump` in this module does
    for _ in range(2):  # the first launch after the change recompiles, the next is warm again
        Y = torch.empty(20)
        k[(2,)](X, Y, backend=backend)
        assert torch.equal(Y, X + 2)
    assert k.source_hash != old_hash
    assert "2.0" in k.source(backend, X, Y)


def test_helpers_are_hashed_transitively(monkeypatch):
    k = _fresh(calls_bump_twice)
    X = torch.randn(20)
    Y = torch.empty(20)
    k[(2,)](X, Y, backend="reference")
    assert torch.equal(Y, X + 1 + 1)
    old_hash = k.source_hash
    # bump_twice is unchanged; the helper it calls is redefined
    monkeypatch.setitem(globals(), "bump", bump_by_two)
    assert k.source_hash != old_hash
    Y = torch.empty(20)
    k[(2,)](X, Y, backend="reference")
    assert torch.equal(Y, X + 2 + 2)
    monkeypatch.undo()
    assert k.source_hash == old_hash
    Y = torch.empty(20)
    k[(2,)](X, Y, backend="reference")
    assert torch.equal(Y, X + 1 + 1)


def test_source_hash_covers_helper_source_not_only_kernel_source():
    # two kernels with identical text that reach different helpers have different hashes
    ns1 = dict(globals(), bump=bump)
    ns2 = dict(globals(), bump=bump_by_two)
    import types
    k1 = Kernel(types.FunctionType(calls_bump.fn.__code__, ns1))
    k2 = Kernel(types.FunctionType(calls_bump.fn.__code__, ns2))
    assert k1.source_hash != k2.source_hash


@tk.func
def add_combine(a, b):
    return a + b


@tk.func
def max_combine(a, b):
    return tk.maximum(a, b)


@tk.kernel
def scan_with(X, Y, B: tk.constexpr = 16):
    x = tk.load(X, (0,), (B,))
    tk.store(Y, (0,), tk.associative_scan(x, 0, add_combine))


def test_redefined_scan_combiner_recompiles(monkeypatch):
    """A helper that is passed (a scan's combiner), not called, is reached too."""
    k = _fresh(scan_with)
    X = torch.randn(16)
    Y = torch.empty(16)
    k[(1,)](X, Y, backend="reference")
    torch.testing.assert_close(Y, torch.cumsum(X, 0))
    monkeypatch.setitem(globals(), "add_combine", max_combine)
    k[(1,)](X, Y, backend="reference")
    assert torch.equal(Y, torch.cummax(X, 0).values)


def _closure_kernel():
    @tk.func
    def helper(x):
        return x + 1.0

    @tk.kernel
    def uses_closure(X, Y, B: tk.constexpr = 16):
        p = tk.program_id(0)
        tk.store(Y, (p * B,), helper(tk.load(X, (p * B,), (B,))))

    def redefine():
        nonlocal helper

        @tk.func
        def helper(x):
            return x * 10.0

    return uses_closure, redefine


def test_redefined_closure_helper_recompiles():
    k, redefine = _closure_kernel()
    X = torch.randn(16)
    Y = torch.empty(16)
    k[(1,)](X, Y, backend="reference")
    assert torch.equal(Y, X + 1)
    redefine()
    k[(1,)](X, Y, backend="reference")
    assert torch.equal(Y, X * 10)
