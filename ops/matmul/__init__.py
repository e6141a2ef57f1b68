"""matmul: ``tilekit::matmul(a, b)``. ``kernels`` holds the DSL kernel and its tunables, ``op`` the torch op,
``tuning`` its tuning declaration (shape tuple ``M,N,K``). See README.md."""
from .op import kernel_example, matmul, matmul_reference  # noqa: F401
from . import tuning  # noqa: F401  (registers matmul.main with the autotuner)
