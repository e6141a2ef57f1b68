"""moe's tuning shapes, SPEC ``T,H,F,E,top_k`` (keyed by the token count, as vLLM keys its tuned files).

Not registered with ``tilekit.autotune.protocol`` yet: the grouped GEMMs read the alignment, whose length
depends on BM (a tunable), so their inputs cannot be made before the config is known. The tunables are
``kernels.GEMM_TUNABLES`` for ``fused_moe.gate_up`` and ``fused_moe.down``."""

MIXTRAL_8X7B = (4096, 14336, 8, 2)        # H, F, E, top_k
QWEN_MOE_A2_7B = (2048, 1408, 60, 4)
QWEN3_MOE_30B = (2048, 768, 128, 8)
DEEPSEEK_V3 = (7168, 2048, 256, 8)        # grouped sigmoid routing: 8 groups, 4 kept

TOKEN_COUNTS = (1, 16, 64, 256, 1024, 4096)

DEFAULT_SHAPES = {
    "gpu": [(t, *model) for model in (MIXTRAL_8X7B, QWEN_MOE_A2_7B, QWEN3_MOE_30B, DEEPSEEK_V3)
            for t in TOKEN_COUNTS],
    "cpu": [(37, 48, 80, 8, 2), (64, 64, 32, 64, 8)],
}
