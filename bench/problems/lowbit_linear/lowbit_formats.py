"""Low-bit weight linear layer in the small-float and block-scaled formats, and asymmetric int3:
Y = X W^T, dequantize-then-matmul.

Codes q (N, K) are packed densely along K into int32 words exactly as in lowbit_linear.py (row n a
little-endian bit stream, code k at stream bits [k*BITS, (k+1)*BITS)). Per FORMAT:
  fp4_e2m1 : W = e2m1(q) * scales[n, k // GROUP], scales fp16 (N, K/GROUP)
  mxfp4    : W = e2m1(q) * 2^(e[n, k // 32] - 127), e uint8 (e8m0)
  nvfp4    : W = e2m1(q) * e4m3(b[n, k // 16]) * global_scale, b the e4m3 codes packed 8-bit like q
  int3_asym: W = (q - zeros[n, k // GROUP]) * scales[n, k // GROUP], q and zeros in [0, 8)
e2m1(q): sign bit 3, magnitude [0, 0.5, 1, 1.5, 2, 3, 4, 6][q & 7]. e4m3: torch.float8_e4m3fn's bits.
Inputs: x (M, K) in DTYPE. Output (M, N) in DTYPE. Sizes: docs/bench.md convention.
"""
import torch
import torch.nn as nn

M, K, N = 1, 4096, 4096
FORMAT, GROUP = "fp4_e2m1", 128
DTYPE = "float16"

QUICK = {"M": 3, "K": 256, "N": 72}

VARIANTS = {
    "fp4_decode_fp16": {},
    "mxfp4_decode_fp16": {"FORMAT": "mxfp4"},
    "nvfp4_decode_fp16": {"FORMAT": "nvfp4"},
    "nvfp4_prefill_bf16": {"FORMAT": "nvfp4", "M": 512, "DTYPE": "bfloat16", "quick": {"M": 40}},
    "int3_asym_decode_fp16": {"FORMAT": "int3_asym"},
    "int3_asym_prefill_fp16": {"FORMAT": "int3_asym", "M": 512, "GROUP": 64, "quick": {"M": 40}},
}

E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
BITS = {"fp4_e2m1": 4, "mxfp4": 4, "nvfp4": 4, "int3_asym": 3}
BLOCK = {"mxfp4": 32, "nvfp4": 16}


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """(R, C) codes in [0, 2^bits) -> (R, ceil(C*bits/32)) int32 words (the layout above)."""
    rows, cols = codes.shape
    words = -(-cols * bits // 32)
    acc = torch.zeros(rows, words + 1, dtype=torch.int64)
    position = torch.arange(cols) * bits
    word, shift = position // 32, position % 32
    acc.index_add_(1, word, (codes.to(torch.int64) << shift) & 0xFFFFFFFF)
    acc.index_add_(1, word + 1, codes.to(torch.int64) >> (32 - shift))
    acc = acc[:, :words]
    return torch.where(acc >= 2**31, acc - 2**32, acc).to(torch.int32)


def unpack_codes(qweight: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    words = qweight.to(torch.int64) & 0xFFFFFFFF
    words = torch.cat([words, torch.zeros_like(words[:, :1])], dim=1)
    position = torch.arange(cols, device=qweight.device) * bits
    word, shift = position // 32, position % 32
    return ((words[:, word] >> shift) | (words[:, word + 1] << (32 - shift))) & ((1 << bits) - 1)


def e2m1(q):
    mag = torch.tensor(E2M1, dtype=torch.float32, device=q.device)[q & 7]
    return torch.where(q & 8 != 0, -mag, mag)


def make_weights(n, k, fmt, group):
    """Random codes and scales (buffers, in creation order) with |W| ~ 1/sqrt(K)."""
    bits = BITS[fmt]
    g = BLOCK.get(fmt, group)
    codes = torch.randint(0, 2**bits, (n, k))
    out = {"qweight": pack_codes(codes, bits)}
    if fmt == "fp4_e2m1":
        out["scales"] = ((0.5 + torch.rand(n, k // g)) / (4 * k**0.5)).to(torch.float16)
    elif fmt == "mxfp4":
        out["scales"] = (127 - 2 - torch.randint(4, 7, (n, k // g))).to(torch.uint8)   # 2^-7 .. 2^-5
    elif fmt == "nvfp4":
        block = (0.5 + torch.rand(n, k // g)) * 64
        out["scales"] = pack_codes(block.to(torch.float8_e4m3fn).view(torch.uint8).to(torch.int64), 8)
        out["global_scale"] = torch.tensor([1.0 / (256 * k**0.5)], dtype=torch.float32)
    else:
        out["scales"] = ((0.5 + torch.rand(n, k // g)) / (4 * k**0.5)).to(torch.float16)
        out["zeros"] = torch.randint(2, 6, (n, k // g)).to(torch.uint8)
    return out


class Model(nn.Module):
    def __init__(self, in_features: int, out_features: int, fmt: str, group: int):
        super().__init__()
        if in_features % BLOCK.get(fmt, group):
            raise ValueError(f"K={in_features} is not a multiple of the {fmt} group")
        self.fmt, self.group, self.in_features = fmt, BLOCK.get(fmt, group), in_features
        for name, t in make_weights(out_features, in_features, fmt, group).items():
            self.register_buffer(name, t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, g = self.in_features, self.group
        q = unpack_codes(self.qweight, BITS[self.fmt], k)
        if self.fmt == "int3_asym":
            w = (q - self.zeros.to(torch.int64).repeat_interleave(g, 1)).float() * \
                self.scales.float().repeat_interleave(g, 1)
        else:
            if self.fmt == "mxfp4":
                s = torch.exp2(self.scales.float() - 127)
            elif self.fmt == "nvfp4":
                b = unpack_codes(self.scales, 8, k // g).to(torch.uint8).view(torch.float8_e4m3fn).float()
                s = b * self.global_scale
            else:
                s = self.scales.float()
            w = e2m1(q) * s.repeat_interleave(g, 1)
        return x @ w.to(x.dtype).t()


def get_inputs():
    return [torch.randn(M, K).to(getattr(torch, DTYPE))]


def get_init_inputs():
    return [K, N, FORMAT, GROUP]
