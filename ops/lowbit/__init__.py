"""lowbit: ``tilekit::lowbit_linear``. ``kernels`` holds the DSL kernels (GEMV / split-K and tiled GEMM, one
family for every format) and their tunables, ``op`` the torch op and wrapper, ``tuning`` the tuning
declarations (shape tuple ``M,N,K``, flags ``fmt``, ``group``). See README.md."""
from .op import kernel_example, lowbit_linear, lowbit_linear_reference  # noqa: F401
from . import tuning  # noqa: F401,E402  (registers lowbit_linear.gemv and lowbit_linear.gemm with the autotuner)
