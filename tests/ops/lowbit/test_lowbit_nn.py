"""tilekit.nn: GPTQ (v1, v2, act-order) and AWQ checkpoints built here from a known float weight (packed by
this file's own loops, never by tilekit) load to the same dequantized weight; hand-computed 8x8 goldens pin
the orientation; QuantLinear / quantize_model match the dequantized model."""
import pytest
import torch

import tilekit.ops
from tilekit import nn as tknn
from tilekit import quant
from tilekit.tolerances import assert_close, op_table

PROPERTY = op_table("lowbit", "PROPERTY")
QUANT = op_table("lowbit", "QUANT")


def stream_pack(codes_rows, bits):
    """Each row of ``codes_rows`` (R, C) as a little-endian bit stream in int32 words (R, C*bits/32)."""
    r, c = codes_rows.shape
    out = []
    for row in codes_rows.tolist():
        acc = 0
        for i, v in enumerate(row):
            acc |= int(v) << (i * bits)
        words = [(acc >> (32 * j)) & 0xFFFFFFFF for j in range(c * bits // 32)]
        out.append([w - (1 << 32) if w >= 1 << 31 else w for w in words])
    return torch.tensor(out, dtype=torch.int32).reshape(r, c * bits // 32)


def gptq_tensors(codes, zeros, scales, bits, v2):
    """codes (N, K), zeros/scales (N, G) -> GPTQ qweight (K*b/32, N), qzeros (G, N*b/32), scales (G, N)."""
    qweight = stream_pack(codes, bits).T.contiguous()      # column n: a bit stream along K
    stored = zeros if v2 else (zeros - 1) % (1 << bits)
    qzeros = stream_pack(stored.T, bits)
    return qweight, qzeros, scales.T.contiguous()


def awq_pack(vals):
    """(R, C) 4-bit values -> (R, C/8) int32, nibble i of word j holding column 8j + [0,2,4,6,1,3,5,7][i]."""
    r, c = vals.shape
    out = torch.zeros(r, c // 8, dtype=torch.int64)
    for nibble, col in enumerate([0, 2, 4, 6, 1, 3, 5, 7]):
        out |= vals[:, col::8].to(torch.int64) << (4 * nibble)
    return torch.where(out >= 1 << 31, out - (1 << 32), out).to(torch.int32)


def _asym(n, k, bits, group, seed):
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed))
    qw = quant.quantize(w, f"uint{bits}", group_size=group)
    return qw, qw.code_values().to(torch.int64), qw.zeros.to(torch.int64), qw.scales


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_gptq_v1_and_v2_load_the_same_weight(bits):
    qw, codes, zeros, scales = _asym(64, 128, bits, 32, seed=bits)
    want = qw.dequantize(torch.float64)
    for v2 in (False, True):
        qweight, qzeros, sc = gptq_tensors(codes, zeros, scales, bits, v2)
        lin = tknn.QuantLinear.from_gptq(qweight, qzeros, sc, bits=bits, group_size=32, sym=False,
                                         checkpoint_format="gptq_v2" if v2 else "gptq")
        assert_close(lin.qw.dequantize(torch.float64), want, table=QUANT)


@pytest.mark.parametrize("sym", [True, False])
def test_gptq_act_order_gathers_x(sym):
    bits, n, k, g = 4, 32, 96, 32
    gen = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 16, (n, k), generator=gen)
    scales = torch.rand(n, k // g, generator=gen).to(torch.float16) + 0.1
    zeros = torch.full((n, k // g), 8) if sym else torch.randint(0, 16, (n, k // g), generator=gen)
    g_idx = torch.randperm(k, generator=gen) % (k // g)      # act-order: groups scattered over k
    qweight, qzeros, sc = gptq_tensors(codes, zeros, scales, bits, v2=False)
    lin = tknn.QuantLinear.from_gptq(qweight, qzeros, sc, g_idx=g_idx, bits=4, group_size=g, sym=sym)
    assert lin.perm is not None
    assert (lin.fmt, lin.zeros is None) == (("int4", True) if sym else ("uint4", False))   # sym: signed codes
    # the float weight in the checkpoint's own k order: (code - 8) * scale[n, g_idx[k]]
    want = (codes - zeros[:, g_idx]).double() * scales.double()[:, g_idx]    # (N, G) by group id, k order
    x = torch.randn(5, k, dtype=torch.float32)
    assert_close(lin(x), (x.double() @ want.T), dtype=torch.float32, table=PROPERTY)


def test_awq_loads_the_same_weight():
    qw, codes, zeros, scales = _asym(64, 128, 4, 32, seed=3)
    lin = tknn.QuantLinear.from_awq(awq_pack(codes.T.contiguous()), awq_pack(zeros.T.contiguous()),
                                    scales.T.contiguous(), bits=4, group_size=32)
    assert_close(lin.qw.dequantize(torch.float64), qw.dequantize(torch.float64), table=QUANT)


# ---- hand-computed 8x8 goldens: code[k, n] = (k + 2n) % 16, zero 8, scale (n + 1) / 8 -----------------------

GOLDEN_CODES = torch.tensor([[(k + 2 * n) % 16 for n in range(8)] for k in range(8)])     # (K, N)
GOLDEN_W = torch.tensor([[((k + 2 * n) % 16 - 8) * (n + 1) / 8 for k in range(8)] for n in range(8)],
                        dtype=torch.float64)                                              # (N, K)
# column n's 8 nibbles, k = 0 lowest: n = 0 -> 0x76543210, n = 1 -> 0x98765432, ...
GPTQ4_QWEIGHT = [0x76543210, 0x98765432, 0xBA987654, 0xDCBA9876, 0xFEDCBA98, 0x10FEDCBA, 0x3210FEDC,
                 0x543210FE]


def _i32(words):
    return torch.tensor([w - (1 << 32) if w >= 1 << 31 else w for w in words], dtype=torch.int32)


def test_gptq4_golden():
    qweight = _i32(GPTQ4_QWEIGHT).reshape(1, 8)
    scales = torch.tensor([[(n + 1) / 8 for n in range(8)]], dtype=torch.float16)
    for fmt, zword in (("gptq", 0x77777777), ("gptq_v2", 0x88888888)):
        qzeros = _i32([zword]).reshape(1, 1)
        lin = tknn.QuantLinear.from_gptq(qweight, qzeros, scales, bits=4, group_size=8, sym=False,
                                         checkpoint_format=fmt)
        assert torch.equal(lin.qw.dequantize(torch.float64), GOLDEN_W), fmt


def test_gptq3_golden():
    # 3-bit: code[k, n] = (k + n) % 8, K = 32 so a column is 3 words; codes 10 and 21 straddle words
    codes = [[(k + n) % 8 for n in range(32)] for k in range(32)]
    words = []
    for n in range(32):
        acc = sum(codes[k][n] << (3 * k) for k in range(32))
        words.append([(acc >> (32 * j)) & 0xFFFFFFFF for j in range(3)])
    assert words[0][0] == 0x88FAC688 and words[0][1] & 0x3 == 0x2    # k = 10 (code 2) straddles word 0/1
    qweight = torch.stack([_i32(words[n]) for n in range(32)], dim=1)           # (3, 32)
    qzeros = _i32([0x92492492, 0x24924924, 0x49249249]).reshape(1, 3)        # 3-bit 2s: zero 3 in v1
    scales = torch.ones(1, 32, dtype=torch.float16)
    lin = tknn.QuantLinear.from_gptq(qweight, qzeros, scales, bits=3, group_size=32, sym=False)
    want = torch.tensor(codes, dtype=torch.float64).T - 3
    assert torch.equal(lin.qw.dequantize(torch.float64), want)


def test_awq_golden():
    # row k of the AWQ qweight: columns 0..7 = (k + 2n) % 16, nibble i holding column [0,2,4,6,1,3,5,7][i]
    words = []
    for k in range(8):
        cols = [(k + 2 * n) % 16 for n in range(8)]
        words.append(sum(cols[c] << (4 * i) for i, c in enumerate([0, 2, 4, 6, 1, 3, 5, 7])))
    assert words[0] == 0xEA62C840   # hand check: nibbles (low first) n = 0,2,4,6,1,3,5,7 -> 0,4,8,C,2,6,A,E
    qweight = _i32(words).reshape(8, 1)
    qzeros = _i32([0x88888888]).reshape(1, 1)
    scales = torch.tensor([[(n + 1) / 8 for n in range(8)]], dtype=torch.float16)
    lin = tknn.QuantLinear.from_awq(qweight, qzeros, scales, bits=4, group_size=8)
    assert torch.equal(lin.qw.dequantize(torch.float64), GOLDEN_W)


def test_quantize_model_matches_the_dequantized_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.GELU(), torch.nn.Linear(96, 32),
                                torch.nn.GELU(), torch.nn.Linear(32, 8))
    x = torch.randn(7, 64)
    tknn.quantize_model(model, "int4", group_size=32, skip=("4",))
    assert isinstance(model[0], tknn.QuantLinear) and isinstance(model[2], tknn.QuantLinear)
    assert isinstance(model[4], torch.nn.Linear) and not isinstance(model[4], tknn.QuantLinear)

    def dequantized(t):
        t = t.double()
        for layer in model:
            if isinstance(layer, tknn.QuantLinear):
                t = t @ layer.qw.dequantize(torch.float64).T + layer.bias.double()
            elif isinstance(layer, torch.nn.Linear):
                t = t @ layer.weight.double().T + layer.bias.double()
            else:
                t = layer(t)
        return t

    with torch.no_grad():
        assert_close(model(x), dequantized(x), dtype=torch.float32, table=PROPERTY)


def test_from_linear_and_errors():
    lin = torch.nn.Linear(64, 16)
    q = tknn.QuantLinear.from_linear(lin, "nvfp4")
    x = torch.randn(3, 64)
    with torch.no_grad():
        assert_close(q(x), x.double() @ q.qw.dequantize(torch.float64).T + lin.bias.double(),
                     dtype=torch.float32, table=PROPERTY)
    with pytest.raises(ValueError, match="bits"):
        tknn.QuantLinear.from_gptq(torch.zeros(5, 8, dtype=torch.int32), torch.zeros(1, 5, dtype=torch.int32),
                                   torch.ones(1, 8), bits=5, group_size=32)
