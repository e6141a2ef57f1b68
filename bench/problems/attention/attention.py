"""Scaled dot-product attention, O = softmax(Q K^T / sqrt(D) + mask) V, causal or not, MHA or GQA.

Inputs: q (B, HEADS_Q, SEQ_Q, D), k and v (B, HEADS_KV, SEQ_KV, D), in DTYPE. HEADS_Q must be a
multiple of HEADS_KV: query head h reads key/value head h // (HEADS_Q // HEADS_KV) (GQA; MHA when
equal). The causal mask lets query i see keys j <= i; causal variants keep SEQ_Q == SEQ_KV so
there is no alignment question. Output (B, HEADS_Q, SEQ_Q, D) in DTYPE.

The reference is PyTorch's scaled_dot_product_attention (flash / memory-efficient kernels on a
GPU), i.e. the eager baseline a user would otherwise call. Sizes: module globals are the full
shape; QUICK and VARIANTS override them (docs/bench.md).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH, SEQ_Q, SEQ_KV = 2, 4096, 4096
HEADS_Q, HEADS_KV, HEAD_DIM = 32, 32, 128
CAUSAL = True
DTYPE = "float16"

QUICK = {"BATCH": 2, "SEQ_Q": 77, "SEQ_KV": 77, "HEADS_Q": 4, "HEADS_KV": 4}

VARIANTS = {
    # Llama-2-7B: 32 heads of 128, causal prefill.
    "mha_causal_d128_fp16": {},
    # Llama-3-8B: GQA 32 query / 8 key-value heads of 128.
    "gqa_causal_d128_bf16": {"HEADS_KV": 8, "DTYPE": "bfloat16", "quick": {"HEADS_KV": 2}},
    # GPT-2 / BERT-like: 64-wide heads, bidirectional.
    "mha_noncausal_d64_bf16": {"BATCH": 8, "SEQ_Q": 2048, "SEQ_KV": 2048, "HEADS_Q": 16, "HEADS_KV": 16,
                               "HEAD_DIM": 64, "CAUSAL": False, "DTYPE": "bfloat16"},
    "gqa_causal_d64_fp16": {"BATCH": 4, "SEQ_Q": 2048, "SEQ_KV": 2048, "HEADS_Q": 32, "HEADS_KV": 4,
                            "HEAD_DIM": 64, "quick": {"HEADS_KV": 1, "SEQ_Q": 50, "SEQ_KV": 50}},
    "gqa_noncausal_d128_fp16": {"HEADS_KV": 8, "CAUSAL": False, "quick": {"HEADS_KV": 2, "SEQ_KV": 93}},
    # Decode: one new query per sequence against a long KV cache (no mask needed).
    "gqa_decode_d128_bf16": {"BATCH": 16, "SEQ_Q": 1, "SEQ_KV": 8192, "HEADS_KV": 8, "CAUSAL": False,
                             "DTYPE": "bfloat16", "quick": {"BATCH": 3, "SEQ_Q": 1, "SEQ_KV": 131, "HEADS_KV": 2}},
}


class Model(nn.Module):
    def __init__(self, causal: bool):
        super().__init__()
        self.causal = causal

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        group = q.shape[1] // k.shape[1]
        if group > 1:
            # Share each key/value head with `group` consecutive query heads.
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)


def get_inputs():
    dtype = getattr(torch, DTYPE)
    q = torch.randn(BATCH, HEADS_Q, SEQ_Q, HEAD_DIM).to(dtype)
    k = torch.randn(BATCH, HEADS_KV, SEQ_KV, HEAD_DIM).to(dtype)
    v = torch.randn(BATCH, HEADS_KV, SEQ_KV, HEAD_DIM).to(dtype)
    return [q, k, v]


def get_init_inputs():
    if HEADS_Q % HEADS_KV:
        raise ValueError(f"HEADS_Q={HEADS_Q} is not a multiple of HEADS_KV={HEADS_KV}")
    if CAUSAL and SEQ_Q != SEQ_KV:
        raise ValueError("causal attention here needs SEQ_Q == SEQ_KV")
    return [CAUSAL]
