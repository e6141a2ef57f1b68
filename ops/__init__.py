"""tilekit ops: kernels written in the tilekit DSL, registered as torch custom operators.

Importing this package registers ``torch.ops.tilekit.matmul``, ``torch.ops.tilekit.softmax`` and
``torch.ops.tilekit.softmax_backward``. See docs/ops.md for how each call picks its backend and config.

Importing it also installs the autotuner's dispatch-table lookup as the config provider (docs/tune.md).
"""
from .dispatch import BACKEND_ENV, backend_for, set_backend, set_config_provider, use_backend  # noqa: F401
# Bound by name: ``tilekit.ops.matmul`` is the op's function; its package is ``tilekit.ops.matmul`` in
# sys.modules (``from tilekit.ops.matmul import op``). Importing registers the torch ops.
from .matmul import kernel_example as _matmul_example, matmul, matmul_reference  # noqa: F401
from .softmax import kernel_example as _softmax_example  # noqa: F401
from .softmax import softmax, softmax_backward, softmax_backward_reference, softmax_reference  # noqa: F401
from .moe import gate_up_example as _moe_example  # noqa: F401
from .moe import fused_moe, fused_moe_reference, moe_align, moe_align_reference, moe_layer, moe_route, moe_route_reference  # noqa: F401

# name -> kernel_example(shape, dtype, device): the kernels the CLI can show and compile
KERNELS = {"matmul": _matmul_example, "softmax": _softmax_example, "moe": _moe_example}
DEFAULT_SHAPES = {"matmul": (4096, 4096, 4096), "softmax": (4096, 4096), "moe": (4096, 4096, 14336, 8, 2)}

from ..autotune.lookup import provider as _tuned_config  # noqa: E402

set_config_provider(_tuned_config)
