"""tk.pack / tk.unpack: exact round trips, the documented bit layout, range checks, and round-to-nearest-even
for small floats, each checked against an independent computation (Python integers, float64, torch's own
float8 casts)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import tilekit as tk
from tilekit import dtypes as D
from tilekit import packing

INTS = [D.by_name(f"int{b}") for b in range(1, 9)]
UINTS = [D.by_name(f"uint{b}") for b in range(1, 9)]
SMALL_FLOATS = [tk.float4_e2m1, tk.float6_e3m2, tk.float6_e2m3, tk.float8_e4m3, tk.float8_e5m2]
ALL_PACKABLE = INTS + UINTS + SMALL_FLOATS


# ---- an independent model of the formats ------------------------------------------------------------------

# (exponent bits, mantissa bits, bias, max finite) written down from the OCP MX / FP8 specifications
SPEC = {
    "float4_e2m1": (2, 1, 1, 6.0),
    "float6_e3m2": (3, 2, 3, 28.0),
    "float6_e2m3": (2, 3, 1, 7.5),
    "float8_e4m3": (4, 3, 7, 448.0),
    "float8_e5m2": (5, 2, 15, 57344.0),
}


def spec_values(dt):
    """Every finite non-negative value of a small float, from its definition (not tilekit's table)."""
    e_bits, m_bits, bias, vmax = SPEC[dt.name]
    out = {0.0}
    for m in range(1, 2 ** m_bits):  # subnormals
        out.add(m / 2 ** m_bits * 2.0 ** (1 - bias))
    for e in range(1, 2 ** e_bits):
        for m in range(2 ** m_bits):
            v = (1 + m / 2 ** m_bits) * 2.0 ** (e - bias)
            if v <= vmax:
                out.add(v)
    return sorted(out)


def round_nearest_even(x, dt):
    """x (within range) rounded to dt in float64: scale by the binade's quantum, round half to even."""
    e_bits, m_bits, bias, vmax = SPEC[dt.name]
    if x == 0:
        return 0.0
    e = max(math.floor(math.log2(abs(x))), 1 - bias)  # subnormals share the smallest normal binade's quantum
    q = 2.0 ** (e - m_bits)
    return round(x / q) * q  # Python's round() is half-to-even, and x / q is exact


def pack_words_reference(codes, bits):
    """Each row as one Python integer bit stream, element c at bit c * bits, cut into 32-bit words."""
    rows = codes.reshape(-1, codes.shape[-1])
    nwords = (codes.shape[-1] * bits + 31) // 32
    out = []
    for row in rows.tolist():
        stream = sum((int(c) & ((1 << bits) - 1)) << (i * bits) for i, c in enumerate(row))
        words = [(stream >> (32 * w)) & 0xFFFFFFFF for w in range(nwords)]
        out.append([w - (1 << 32) if w >= 1 << 31 else w for w in words])
    return torch.tensor(out, dtype=torch.int32).reshape(*codes.shape[:-1], nwords)


def test_spec_values_match_the_dtype_table():
    """The two models of each format agree before either is used to judge the other."""
    for dt in SMALL_FLOATS:
        t = D.small_float_table(dt)
        mine = sorted({abs(float(v)) for v in t if np.isfinite(v)})
        assert mine == spec_values(dt), dt
        assert D.small_float_max(dt) == SPEC[dt.name][3]


# ---- round trips --------------------------------------------------------------------------------------------

shapes = st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 70))


@given(dt=st.sampled_from(INTS + UINTS), shape=shapes, seed=st.integers(0, 2**31 - 1))
@example(dt=D.by_name("int3"), shape=(1, 1, 11), seed=0)     # 33 bits: the last code straddles two words
@example(dt=D.by_name("uint1"), shape=(2, 1, 33), seed=1)
@example(dt=D.by_name("int8"), shape=(1, 1, 1), seed=2)
def test_integer_round_trip_is_exact(dt, shape, seed):
    lo, hi = D.int_range(dt)
    g = torch.Generator().manual_seed(seed)
    vals = torch.randint(lo, hi + 1, shape, generator=g)
    vals.view(-1)[: min(2, vals.numel())] = torch.tensor([lo, hi][: min(2, vals.numel())])  # both extremes
    p = tk.pack(vals, dt)
    assert p.shape == shape and p.dtype is dt
    assert p.words.shape == (*shape[:-1], (shape[-1] * dt.bits + 31) // 32)
    assert torch.equal(p.words, pack_words_reference(vals, dt.bits))
    assert torch.equal(tk.unpack(p), vals)


@given(dt=st.sampled_from(SMALL_FLOATS), shape=shapes, seed=st.integers(0, 2**31 - 1))
@example(dt=tk.float6_e3m2, shape=(1, 1, 16), seed=0)
@example(dt=tk.float4_e2m1, shape=(1, 1, 1), seed=0)
def test_small_float_round_trip_is_exact(dt, shape, seed):
    pos = torch.tensor(spec_values(dt), dtype=torch.float64)
    allv = torch.cat([pos, -pos[1:]])
    g = torch.Generator().manual_seed(seed)
    vals = allv[torch.randint(0, allv.numel(), shape, generator=g)]
    p = tk.pack(vals, dt)
    out = tk.unpack(p, torch.float64)
    assert torch.equal(out, vals)
    codes = torch.from_numpy(packing.codes(p))
    assert torch.equal(p.words, pack_words_reference(codes, dt.bits))


@pytest.mark.parametrize("dt", SMALL_FLOATS, ids=lambda d: d.name)
def test_every_representable_value_round_trips(dt):
    pos = spec_values(dt)
    vals = torch.tensor(pos + [-v for v in pos[1:]], dtype=torch.float64)[None, :]
    assert torch.equal(tk.unpack(tk.pack(vals, dt), torch.float64), vals)


@pytest.mark.parametrize("dt", SMALL_FLOATS, ids=lambda d: d.name)
def test_negative_zero_keeps_its_sign(dt):
    out = tk.unpack(tk.pack(torch.tensor([-0.0, 0.0]), dt), torch.float64)
    assert torch.signbit(out).tolist() == [True, False]


def test_specials():
    e5m2 = tk.unpack(tk.pack(torch.tensor([float("inf"), -float("inf"), float("nan")]), tk.float8_e5m2))
    assert e5m2[0] == float("inf") and e5m2[1] == -float("inf") and torch.isnan(e5m2[2])
    assert torch.isnan(tk.unpack(tk.pack(torch.tensor([float("nan")]), tk.float8_e4m3))).all()


def test_documented_bit_layout():
    """Little-endian bit stream per row, rows start on a word boundary."""
    p = tk.pack(torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9], [15, 0, 0, 0, 0, 0, 0, 0, 1]]), tk.uint4)
    assert p.words.shape == (2, 2)
    assert p.words.tolist()[0] == [0x87654321 - (1 << 32), 9]
    assert p.words.tolist()[1] == [15, 1]


# ---- range checks -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dt", INTS + UINTS, ids=lambda d: d.name)
def test_integers_out_of_range_raise(dt):
    lo, hi = D.int_range(dt)
    for bad in (lo - 1, hi + 1):
        with pytest.raises(ValueError, match="out of range"):
            tk.pack(torch.tensor([0, bad]), dt)
    with pytest.raises(ValueError, match="integers"):
        tk.pack(torch.tensor([0.5]), dt)


@pytest.mark.parametrize("dt", SMALL_FLOATS, ids=lambda d: d.name)
def test_small_floats_out_of_range_raise(dt):
    vmax = SPEC[dt.name][3]
    for bad in (vmax * 1.5, -vmax * 1.5, vmax * 1000):
        with pytest.raises(ValueError, match="out of range"):
            tk.pack(torch.tensor([1.0, bad], dtype=torch.float64), dt)
    if dt is not tk.float8_e5m2:
        with pytest.raises(ValueError, match="infinity"):
            tk.pack(torch.tensor([float("inf")]), dt)
    if dt in (tk.float4_e2m1, tk.float6_e3m2, tk.float6_e2m3):
        with pytest.raises(ValueError, match="NaN"):
            tk.pack(torch.tensor([float("nan")]), dt)


def test_pack_rejects_standard_dtypes_and_scalars():
    with pytest.raises(TypeError):
        tk.pack(torch.tensor([1.0]), tk.float16)
    with pytest.raises(ValueError):
        tk.pack(torch.tensor(1), tk.int4)


def test_packed_tensor_validates_its_words():
    with pytest.raises(TypeError, match="int32"):
        tk.PackedTensor(torch.zeros(2, dtype=torch.int64), tk.int4, (2, 16))
    with pytest.raises(ValueError, match="expected words of shape"):
        tk.PackedTensor(torch.zeros(2, 3, dtype=torch.int32), tk.int4, (2, 16))


# ---- rounding: nearest, ties to even ------------------------------------------------------------------------

@given(dt=st.sampled_from(SMALL_FLOATS), u=st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=40))
def test_small_float_rounding_is_nearest_even(dt, u):
    vmax = SPEC[dt.name][3]
    x = [v * vmax for v in u]
    got = tk.unpack(tk.pack(torch.tensor(x, dtype=torch.float64), dt), torch.float64).tolist()
    want = [round_nearest_even(v, dt) for v in x]
    assert [abs(g) for g in got] == [abs(w) for w in want]
    assert all(g == w for g, w in zip(got, want))


@pytest.mark.parametrize("dt", SMALL_FLOATS, ids=lambda d: d.name)
def test_ties_go_to_even(dt):
    pos = spec_values(dt)
    mids = [(a + b) / 2 for a, b in zip(pos, pos[1:])]
    got = tk.unpack(tk.pack(torch.tensor(mids, dtype=torch.float64), dt), torch.float64).tolist()
    for (a, b), mid, g in zip(zip(pos, pos[1:]), mids, got):
        assert g in (a, b), (mid, g)
        # the even neighbour: the one whose lowest mantissa bit is 0
        code = D.encode_small_float(np.array([g]), dt)[0]
        assert code & 1 == 0, (dt, mid, g)
        assert g == round_nearest_even(mid, dt)


@pytest.mark.parametrize("dt,torch_dt", [(tk.float8_e4m3, torch.float8_e4m3fn), (tk.float8_e5m2, torch.float8_e5m2)])
def test_float8_rounding_matches_torch(dt, torch_dt):
    g = torch.Generator().manual_seed(0)
    vmax = SPEC[dt.name][3]
    x = (torch.rand(4000, generator=g, dtype=torch.float64) * 2 - 1) * vmax
    x = torch.cat([x, x / 1e3, x / 1e6])  # normals and subnormals
    x = x.to(torch.float32).to(torch.float64)  # torch's float8 casts go through float32 exactly
    got = tk.unpack(tk.pack(x, dt), torch.float64)
    want = x.to(torch.float32).to(torch_dt).to(torch.float64)
    assert torch.equal(got, want)


def test_pack_and_unpack_empty_rows_and_empty_tensors():
    """Regression: a (3, 0) tensor failed with 'cannot reshape array of size 0' (reshape(-1, 0))."""
    for shape in ((3, 0), (0, 5), (2, 0, 4), (0,)):
        v = torch.zeros(shape, dtype=torch.int64)
        p = tk.pack(v, tk.int3)
        assert p.shape == shape and torch.equal(tk.unpack(p), v)
