"""tilekit ops: kernels written in the tilekit DSL, registered as torch custom operators.

Importing this package registers ``torch.ops.tilekit.matmul``, ``torch.ops.tilekit.softmax`` and
``torch.ops.tilekit.softmax_backward``. See docs/ops.md for how each call picks its backend and config.
"""
from . import matmul, softmax  # noqa: F401  (importing registers the torch ops)
from .dispatch import BACKEND_ENV, backend_for, set_backend, set_config_provider, use_backend  # noqa: F401
from .matmul import matmul_reference  # noqa: F401
from .softmax import softmax_backward_reference, softmax_reference  # noqa: F401

# name -> kernel_example(shape, dtype, device): the kernels the CLI can show and compile
KERNELS = {"matmul": matmul.kernel_example, "softmax": softmax.kernel_example}
DEFAULT_SHAPES = {"matmul": (4096, 4096, 4096), "softmax": (4096, 4096)}
