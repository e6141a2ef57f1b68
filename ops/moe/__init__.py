"""MoE: ``tilekit::moe_route`` (+ backward) and ``tilekit::moe_align``. ``kernels`` holds the DSL kernels,
``op`` the torch ops and references. See README.md."""
from .op import (fused_moe, fused_moe_reference, gate_up_example, kernel_example, moe_align, moe_align_reference, moe_route,  # noqa: F401
                 moe_route_reference)  # noqa: F401
