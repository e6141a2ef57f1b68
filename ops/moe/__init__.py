"""MoE: ``tilekit::moe_route`` (+ backward), ``tilekit::moe_align``, ``tilekit::fused_moe`` (+ backward) and the
``moe_layer`` wrapper. ``kernels`` holds the DSL kernels, ``op`` the torch ops and references, ``tuning`` the
tuning declarations of ``fused_moe.gate_up`` and ``fused_moe.down`` (shape tuple ``T,H,F,E,top_k``). See
README.md."""
from .op import (fused_moe, fused_moe_reference, gate_up_example, kernel_example, moe_align,  # noqa: F401
                 moe_align_reference, moe_layer, moe_route, moe_route_reference)
from . import tuning  # noqa: F401,E402  (registers fused_moe.gate_up and fused_moe.down with the autotuner)
