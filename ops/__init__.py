"""tilekit ops: kernels written in the tilekit DSL, registered as torch custom operators.

Importing this package registers every ``torch.ops.tilekit.*`` op (see docs/ops.md for how each call picks
its backend and config) and installs the autotuner's dispatch-table lookup as the config provider
(docs/tune.md).

The wrappers are bound here by name: ``tilekit.ops.matmul`` is the op's function, while its package is
reached as a submodule (``from tilekit.ops.matmul import op``).
"""
from .dispatch import BACKEND_ENV, backend_for, set_backend, set_config_provider, use_backend  # noqa: F401
from .matmul import kernel_example as _matmul_example, matmul, matmul_reference  # noqa: F401
from .softmax import kernel_example as _softmax_example  # noqa: F401
from .softmax import softmax, softmax_backward, softmax_backward_reference, softmax_reference  # noqa: F401
from .attention import attention, attention_decode, attention_reference, attention_varlen  # noqa: F401
from .attention import kernel_example as _attention_example  # noqa: F401
from .lowbit import kernel_example as _lowbit_example, lowbit_linear, lowbit_linear_reference  # noqa: F401
from .moe import gate_up_example as _moe_example  # noqa: F401
from .moe import fused_moe, fused_moe_reference, moe_align, moe_align_reference, moe_layer  # noqa: F401
from .moe import moe_route, moe_route_reference  # noqa: F401
from .ssm import kernel_example as _selective_scan_example, selective_scan, selective_scan_reference  # noqa: F401
from .ssm import selective_state_update, ssd_scan, ssd_state_update  # noqa: F401
from .ssm.ssd import kernel_example as _ssd_example  # noqa: F401

# name -> kernel_example(shape, dtype, device): the kernels the CLI can show and compile, at the op's default
# tuning shape
KERNELS = {"matmul": _matmul_example, "softmax": _softmax_example, "attention": _attention_example,
           "lowbit_linear": _lowbit_example, "moe": _moe_example, "selective_scan": _selective_scan_example,
           "ssd_scan": _ssd_example}
DEFAULT_SHAPES = {"matmul": (4096, 4096, 4096), "softmax": (4096, 4096), "attention": (1, 32, 8, 4096, 4096, 128),
                  "lowbit_linear": (1, 4096, 4096), "moe": (4096, 4096, 14336, 8, 2),
                  "selective_scan": (1, 5120, 2048, 16), "ssd_scan": (1, 2048, 80, 64, 128, 256)}

from ..autotune.lookup import provider as _tuned_config  # noqa: E402

set_config_provider(_tuned_config)
