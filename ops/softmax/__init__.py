"""softmax: ``tilekit::softmax(x)`` and ``tilekit::softmax_backward(grad, y)``. ``kernels`` holds the DSL
kernels and their tunables, ``op`` the torch ops, ``tuning`` their tuning declarations (shape tuple
``rows,cols``). See README.md."""
from .op import kernel_example, softmax, softmax_backward, softmax_backward_reference, softmax_reference  # noqa: F401
from . import tuning  # noqa: F401  (registers softmax.forward and softmax.backward with the autotuner)
