"""Low-bit weight linear layer, W{BITS}A16: Y = X W^T, dequantize-then-matmul.

Weights W (N, K) are stored as BITS-bit unsigned codes q in [0, 2^BITS), packed densely along K
into int32 words, with one fp scale per GROUP consecutive inputs of a row (symmetric, GPTQ-style):
  W[n, k] = (q[n, k] - 2^(BITS-1)) * scales[n, k // GROUP]
Packing: row n is a little-endian bit stream; code k occupies stream bits [k*BITS, (k+1)*BITS),
and stream bit i is bit (i % 32) of word i // 32. For BITS 3, 5 and 6 codes straddle word
boundaries. qweight is int32 (N, ceil(K*BITS/32)); scales are DTYPE (N, K/GROUP).
Inputs: x (M, K) in DTYPE (fp16 or bf16). Output (M, N) in DTYPE.

The reference unpacks explicitly with shifts and masks, dequantizes to DTYPE, then multiplies.
Sizes: docs/bench.md convention.
"""
import math

import torch
import torch.nn as nn

M, K, N = 16, 4096, 11008
BITS, GROUP = 4, 128
DTYPE = "float16"

QUICK = {"M": 13, "K": 160, "N": 72, "GROUP": 32}

VARIANTS = {
    # Llama-7B MLP up-projection; decode (M=16) and prefill (M=2048) shapes.
    "w2_decode_fp16": {"BITS": 2},
    "w3_prefill_fp16": {"BITS": 3, "M": 2048, "quick": {"M": 45}},
    "w4_decode_bf16": {"BITS": 4, "DTYPE": "bfloat16"},
    "w4_prefill_fp16": {"BITS": 4, "M": 2048, "quick": {"M": 45}},
    "w5_decode_fp16": {"BITS": 5, "K": 11008, "N": 4096, "quick": {"K": 224, "N": 40}},
    "w6_decode_bf16": {"BITS": 6, "DTYPE": "bfloat16", "GROUP": 64, "quick": {"K": 192, "GROUP": 64}},
    "w8_prefill_bf16": {"BITS": 8, "M": 2048, "DTYPE": "bfloat16", "quick": {"M": 45}},
    # the extremes of the width range: 1 bit (codes {0, 1} centred to {-1, 0}) and 7 bits (straddling words)
    "w1_decode_fp16": {"BITS": 1},
    "w7_decode_fp16": {"BITS": 7, "K": 4096, "N": 4096, "quick": {"K": 224, "N": 40}},
}


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """(N, K) integer codes in [0, 2^bits) -> (N, ceil(K*bits/32)) int32 words (layout above)."""
    rows, cols = codes.shape
    words = -(-cols * bits // 32)
    codes = codes.to(torch.int64)
    position = torch.arange(cols, device=codes.device) * bits
    word, shift = position // 32, position % 32
    acc = torch.zeros(rows, words + 1, dtype=torch.int64, device=codes.device)
    # Codes never overlap, so adding the shifted pieces is the same as OR-ing them.
    acc.index_add_(1, word, (codes << shift) & 0xFFFFFFFF)
    acc.index_add_(1, word + 1, codes >> (32 - shift))          # the part spilling into the next word
    acc = acc[:, :words]
    return torch.where(acc >= 2**31, acc - 2**32, acc).to(torch.int32)


def unpack_codes(qweight: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    """Inverse of pack_codes: int32 words -> (N, cols) int64 codes."""
    words = qweight.to(torch.int64) & 0xFFFFFFFF
    words = torch.cat([words, torch.zeros_like(words[:, :1])], dim=1)
    position = torch.arange(cols, device=qweight.device) * bits
    word, shift = position // 32, position % 32
    low = words[:, word] >> shift
    high = words[:, word + 1] << (32 - shift)
    return (low | high) & ((1 << bits) - 1)


class Model(nn.Module):
    def __init__(self, in_features: int, out_features: int, bits: int, group: int, dtype: str):
        super().__init__()
        if in_features % group:
            raise ValueError(f"K={in_features} is not a multiple of GROUP={group}")
        dt = getattr(torch, dtype)
        self.bits, self.group, self.in_features = bits, group, in_features
        codes = torch.randint(0, 2**bits, (out_features, in_features))
        # Scales keep |W| ~ 1/sqrt(K) whatever the bit width, so outputs stay O(1).
        scales = (0.5 + torch.rand(out_features, in_features // group)) / (2 ** (bits - 1) * math.sqrt(in_features))
        self.register_buffer("qweight", pack_codes(codes, bits))
        self.register_buffer("scales", scales.to(dt))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = unpack_codes(self.qweight, self.bits, self.in_features)
        centred = (codes - 2 ** (self.bits - 1)).to(x.dtype)
        weight = centred * self.scales.repeat_interleave(self.group, dim=1)
        return x @ weight.t()


def get_inputs():
    return [torch.randn(M, K).to(getattr(torch, DTYPE))]


def get_init_inputs():
    return [K, N, BITS, GROUP, DTYPE]
