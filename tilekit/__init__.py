"""tilekit: a tile-based Python DSL for GPU kernels.

Write a kernel once over tiles; run it on the numpy reference executor or lower it to Triton (and,
later, CUDA/HIP/OpenCL C).
"""
__version__ = "0.1.0"

from . import dtypes as _dtypes
from .dtypes import DType, all_dtypes  # noqa: F401
from .errors import BackendError, BackendUnavailable, CompileError, OutOfBoundsError, TilekitError  # noqa: F401
from .kernel import JitFunction, Kernel, func, kernel  # noqa: F401
from .language import *  # noqa: F401,F403,A004  (every tk.* builtin: language.__all__, from the op table)
from .packing import PackedTensor, pack, unpack  # noqa: F401
from .tunables import Tunables  # noqa: F401

for _dt in _dtypes.all_dtypes():
    globals()[_dt.name] = _dt
bool_ = _dtypes.bool_
del _dt
