"""MoE: ``tilekit::moe_route`` (+ backward), ``tilekit::moe_align``, ``tilekit::fused_moe`` (forward) and the
``moe_layer`` wrapper. ``kernels`` holds the DSL kernels, ``op`` the torch ops and references. See README.md."""
from .op import (fused_moe, fused_moe_reference, gate_up_example, kernel_example, moe_align,  # noqa: F401
                 moe_align_reference, moe_layer, moe_route, moe_route_reference)
