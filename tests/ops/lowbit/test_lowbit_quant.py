"""quantize / dequantize against an independent float64 implementation of DESIGN.md's format table (written
here from the table alone: value grids built from the exponent/mantissa formula, torch rounding), plus exact
packing round trips for every width on random codes that include the extremes."""
import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import tilekit as tk
from tilekit import quant
from tilekit.tolerances import assert_close, op_table

QUANT = op_table("lowbit", "QUANT")
GROUPS = [8, 32, 48, 64, 128, -1]


def float_grid(e, m, bias, drop_top_exponent=False, drop_nan_code=False):
    """Non-negative finite values of a sign/e/m float, ascending (index parity = mantissa parity)."""
    vals = []
    for ex in range(2 ** e):
        if drop_top_exponent and ex == 2 ** e - 1:
            continue
        for ma in range(2 ** m):
            if drop_nan_code and ex == 2 ** e - 1 and ma == 2 ** m - 1:
                continue
            vals.append(ma * 2.0 ** (1 - bias - m) if ex == 0 else (1 + ma / 2 ** m) * 2.0 ** (ex - bias))
    return torch.tensor(vals, dtype=torch.float64)


GRIDS = {"fp4_e2m1": float_grid(2, 1, 1), "fp6_e3m2": float_grid(3, 2, 3), "fp6_e2m3": float_grid(2, 3, 1),
         "fp8_e4m3": float_grid(4, 3, 7, drop_nan_code=True), "fp8_e5m2": float_grid(5, 2, 15, drop_top_exponent=True)}


def round_to_grid(x, grid):
    """Nearest grid value by magnitude, ties to the even index, sign kept."""
    mag = x.abs().clamp(max=float(grid[-1]))
    d = (mag[..., None] - grid).abs()
    best = d.min(dim=-1, keepdim=True).values
    ties = d == best
    idx = torch.arange(grid.numel())
    pick = torch.where(ties & (idx % 2 == 0), idx, grid.numel() + idx).min(dim=-1).values % grid.numel()
    pick = torch.where(ties.sum(-1) == 1, ties.to(torch.int64).argmax(-1), pick)
    return torch.sign(x) * grid[pick]


def fp16(t):
    return t.to(torch.float16).to(torch.float64)


def independent_dequantize(w, fmt, group, symmetric):
    """DESIGN.md's table in float64 torch, (N, K)."""
    w = w.to(torch.float64)
    n, k = w.shape
    group = {"mxfp4": 32, "nvfp4": 16}.get(fmt, group)
    g = k if group == -1 else group
    wg = w.reshape(n, k // g, g)
    div = lambda a, s: torch.where(s == 0, torch.zeros_like(a), a / torch.where(s == 0, 1.0, s))  # noqa: E731
    if fmt == "int1":
        s = fp16(wg.abs().mean(-1, keepdim=True))
        out = torch.where(wg < 0, -1.0, 1.0) * s
    elif fmt.startswith("int") and symmetric:
        qmax = 2 ** (int(fmt[3:]) - 1) - 1
        s = fp16(wg.abs().amax(-1, keepdim=True) / qmax)
        out = torch.clamp(torch.round(div(wg, s)), -qmax, qmax) * s
    elif fmt.startswith(("int", "uint")):
        qmax = 2 ** int(fmt.lstrip("uint")) - 1
        hi, lo = wg.amax(-1, keepdim=True), wg.amin(-1, keepdim=True)
        s = fp16((hi - lo) / qmax)
        zero = torch.clamp(torch.round(div(-lo, s)), 0, qmax)
        out = (torch.clamp(torch.round(div(wg, s)) + zero, 0, qmax) - zero) * s
    elif fmt in GRIDS:
        grid = GRIDS[fmt]
        s = fp16(wg.abs().amax(-1, keepdim=True) / grid[-1])
        out = round_to_grid(div(wg, s), grid) * s
    elif fmt == "mxfp4":
        amax = wg.abs().amax(-1, keepdim=True)
        s = torch.where(amax > 0, torch.exp2(torch.floor(torch.log2(amax)) - 2), torch.zeros_like(amax))
        out = round_to_grid(div(wg, s), GRIDS["fp4_e2m1"]) * s
    else:  # nvfp4
        tensor_scale = float(torch.tensor(w.abs().max().item() / (448 * 6), dtype=torch.float32))
        block = round_to_grid(wg.abs().amax(-1, keepdim=True) / 6 / tensor_scale, GRIDS["fp8_e4m3"])
        s = block * tensor_scale
        out = round_to_grid(div(wg, s), GRIDS["fp4_e2m1"]) * s
    return out.reshape(n, k)


FORMAT_CASES = [(f, True) for f in quant.FORMATS] + [(f"int{b}", False) for b in range(2, 9)]


def _weight(n, k, seed, outliers):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g, dtype=torch.float64)
    if outliers:
        w = w * torch.exp(torch.randn(n, 1, generator=g, dtype=torch.float64) * 2)  # rows of very different scale
    return w


@pytest.mark.parametrize("fmt,symmetric", FORMAT_CASES, ids=lambda v: str(v))
@settings(max_examples=4, deadline=None)
@given(group=st.sampled_from(GROUPS), count=st.sampled_from([1, 3, 5, 7]), n=st.integers(1, 9),
       k_any=st.integers(1, 70), seed=st.integers(0, 2**31 - 1), outliers=st.booleans())
@example(group=8, count=3, n=1, k_any=1, seed=0, outliers=False)
@example(group=-1, count=1, n=3, k_any=1, seed=1, outliers=True)
def test_quantize_matches_independent_table(fmt, symmetric, group, count, n, k_any, seed, outliers):
    block = {"mxfp4": 32, "nvfp4": 16}.get(fmt)
    k = (block or (group if group > 0 else 1)) * count if (block or group > 0) else k_any
    w = _weight(n, k, seed, outliers).to(torch.float32)
    qw = quant.quantize(w, fmt, group_size=group, symmetric=symmetric)
    assert qw.shape == (n, k) and qw.qweight.shape == (n, k)
    assert_close(qw.dequantize(torch.float64), independent_dequantize(w, fmt, group, symmetric),
                 table=QUANT, msg=f"{fmt} symmetric={symmetric} group={group}")


def test_codes_hit_the_table_ranges():
    w = torch.linspace(-3, 5, 128).reshape(1, 128)
    for bits in range(2, 9):
        c = quant.quantize(-w, f"int{bits}", group_size=-1).code_values()
        qmax = 2 ** (bits - 1) - 1
        assert c.min() == -qmax and c.max() <= qmax      # absmax maps to the extreme code; -2^(B-1) unused
        u = quant.quantize(w, f"uint{bits}", group_size=-1)
        assert u.code_values().min() == 0 and u.code_values().max() == 2 ** bits - 1
        a = quant.quantize(w, f"int{bits}", group_size=-1, symmetric=False)
        assert torch.equal(a.code_values() + 2 ** (bits - 1), u.code_values())   # stored offset by 2^(B-1)
    assert set(quant.quantize(w, "int1", group_size=-1).code_values().unique().tolist()) == {-1.0, 1.0}


def test_hand_computed_int4_and_mxfp4():
    w = torch.tensor([[0.7, -1.4, 0.0, 0.35, 0.1, -0.2, 1.05, -0.7]])
    qw = quant.quantize(w, "int4", group_size=8)
    assert qw.scales.item() == 0.199951171875          # 1.4 / 7 in fp16
    assert qw.code_values().tolist() == [[4, -7, 0, 2, 1, -1, 5, -4]]   # 0.7 / 0.19995 = 3.5009 -> 4
    m = quant.quantize(torch.tensor([[5.0] + [0.5] * 31]), "mxfp4")
    assert m.scales.tolist() == [[127]]                 # 2^(floor(log2 5) - 2) = 2^0
    assert m.code_values()[0, :2].tolist() == [4.0, 0.5]  # 5 ties 4 and 6: the even mantissa (4)


@pytest.mark.parametrize("bad", [dict(group_size=12), dict(group_size=0), dict(group_size=40)])
def test_bad_group_sizes_raise(bad):
    with pytest.raises(ValueError, match="group_size"):
        quant.quantize(torch.randn(4, 64), "int4", **bad)


def test_block_formats_need_their_multiple_and_fmt_names():
    with pytest.raises(ValueError, match="K % 32"):
        quant.quantize(torch.randn(4, 48), "mxfp4")
    with pytest.raises(ValueError, match="K % 16"):
        quant.quantize(torch.randn(4, 24), "nvfp4")
    with pytest.raises(ValueError, match="unknown fmt"):
        quant.quantize(torch.randn(4, 32), "int9")
    with pytest.raises(TypeError, match="'w'"):
        quant.quantize(torch.ones(4, 32, dtype=torch.int32), "int4")


WIDTH_DTYPES = [tk.dtypes.by_name(f"{k}{b}") for b in range(1, 8) for k in ("int", "uint")] + \
    [tk.int8, tk.uint8, tk.float4_e2m1, tk.float6_e3m2, tk.float6_e2m3, tk.float8_e4m3, tk.float8_e5m2]


@pytest.mark.parametrize("wdtype", WIDTH_DTYPES, ids=lambda d: d.name)
def test_packing_round_trip_every_width_with_extremes(wdtype):
    g = torch.Generator().manual_seed(wdtype.bits)
    if wdtype.is_float:
        table = torch.from_numpy(tk.dtypes.small_float_table(wdtype))
        vals = table[torch.isfinite(table)]
        extremes = torch.tensor([vals.min(), vals.max(), 0.0], dtype=torch.float64)
    else:
        lo, hi = tk.dtypes.int_range(wdtype)
        vals = torch.arange(lo, hi + 1, dtype=torch.float64)
        extremes = torch.tensor([lo, hi, lo, hi], dtype=torch.float64)
    for n, k in [(3, 37), (2, 97), (1, 1)]:
        codes = vals[torch.randint(0, vals.numel(), (n, k), generator=g)]
        codes[0, : min(k, extremes.numel())] = extremes[: min(k, extremes.numel())]
        p = tk.pack(codes, wdtype)
        assert p.words.shape == (n, (k * wdtype.bits + 31) // 32)     # dense: no bits lost within a row
        assert torch.equal(tk.unpack(p, torch.float64), codes)
