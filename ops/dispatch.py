"""What every tilekit op shares: which backend runs it, which config it launches with, and input checks.

Backend choice, first match wins:
  1. ``tilekit.ops.set_backend(name)`` / ``with tilekit.ops.use_backend(name):`` (this process);
  2. the ``TILEKIT_OPS_BACKEND`` environment variable, read at every call;
  3. the tensors' device, by the backend registry (``tilekit.backends.default_backend``): CPU -> ``reference``
     (numpy, fast), CUDA -> ``triton``.

Config choice: each op kernel has one ``config_for(shape, dtype, device, backend)``. It asks the registered
config provider first (the autotuner's dispatch table, see ``set_config_provider``) and falls back to the
kernel's own default. A provided config that fails the kernel's ``tk.Tunables`` rule is dropped with a warning.
"""
from __future__ import annotations

import contextlib
import functools
import os

import torch

from ..backends import BACKENDS, OPS_BACKEND_ENV as BACKEND_ENV, check_launch_device, default_backend


# The floating dtypes the ops accept. float64 is there for gradient checks (torch.autograd.gradcheck).
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

_backend_setting: str | None = None
_config_provider = None


def _check_backend_name(name, source):
    if name not in BACKENDS:
        raise ValueError(f"{source}: unknown tilekit backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def set_backend(name: str | None):
    """Force every tilekit op in this process onto backend ``name``; ``None`` goes back to the default."""
    global _backend_setting
    _backend_setting = None if name is None else _check_backend_name(name, "tilekit.ops.set_backend")


@contextlib.contextmanager
def use_backend(name: str | None):
    """``with use_backend("triton"): ...`` runs the ops inside on ``name``, then restores the previous choice."""
    global _backend_setting
    previous = _backend_setting
    set_backend(name)
    try:
        yield
    finally:
        _backend_setting = previous


def backend_for(device: torch.device) -> str:
    """The backend an op launches its kernels on, for tensors on ``device``."""
    if _backend_setting is not None:
        name = _backend_setting
    elif os.environ.get(BACKEND_ENV):
        name = _check_backend_name(os.environ[BACKEND_ENV], f"${BACKEND_ENV}")
    else:
        name = default_backend(device)
    check_launch_device(name, device, here=False,
                        hint=f"unset {BACKEND_ENV} / tilekit.ops.set_backend or move the tensors")
    return name


# ---- configs -------------------------------------------------------------------------------------

def set_config_provider(provider):
    """Install ``provider(kernel_id, shape_key, dtype, device, backend) -> dict | None``. ``kernel_id`` is
    ``OP.KERNEL`` (``matmul.main``, ``softmax.forward``), ``shape_key`` the op's shape tuple. ``None`` from
    it means "use the op's default". ``import tilekit.ops`` installs the autotuner's table lookup
    (``tilekit.autotune.lookup.provider``). Returns the previous provider."""
    global _config_provider
    previous, _config_provider = _config_provider, provider
    return previous


_VALIDATED = {}  # (kernel_id, shape, elem_bytes, id(config)) -> (config, why invalid or None): once per answer


def provided_config(kernel_id, shape, dtype, device, backend, tunables, elem_bytes):
    """The provider's config for this call if it passes ``tunables``' rule for it; else None. A config that
    fails the rule is dropped with one warning (an error under ``TILEKIT_TUNING=strict``), so a stale or
    foreign table entry can never crash an op. The verdict is remembered per (shape, config object): the
    lookup's provider answers warm calls from memory, and the rule costs microseconds."""
    if _config_provider is None:
        return None
    config = _config_provider(kernel_id, shape, dtype, device, backend)
    if config is None:
        return None
    key = (kernel_id, tuple(shape), elem_bytes, id(config))
    seen = _VALIDATED.get(key)
    if seen is not None and seen[0] is config:  # the same object (kept alive here, so its id is not reused)
        why = seen[1]
    else:
        why = _why_invalid(config, tunables, elem_bytes)
        if len(_VALIDATED) > 4096:
            _VALIDATED.clear()
        _VALIDATED[key] = (config, why)
    if why:  # every call: under TILEKIT_TUNING=strict each one raises
        from ..autotune.lookup import warn
        warn(f"tilekit::{kernel_id}: the looked-up config {config} is invalid for shape {tuple(shape)} "
             f"({why}); using the default", key=("invalid", kernel_id, repr(sorted(config.items()))))
        return None
    return dict(config)


def checked_config(op_name, config, tunables, elem_bytes):
    """``config`` if it passes ``tunables``; a ValueError naming the problem otherwise (for the ops' own
    defaults, which must always be valid)."""
    why = _why_invalid(config, tunables, elem_bytes)
    if why:
        raise ValueError(f"tilekit::{op_name}: config {config} is invalid: {why}")
    return config


def _why_invalid(config, tunables, elem_bytes):
    """Why ``config`` fails ``tunables`` (a tunable missing, or the validity rule), or None."""
    missing = [k for k in tunables.names if k not in config]
    if missing:
        return f"lacks tunable(s) {', '.join(missing)}"
    return tunables.why_invalid({**config, "elem_bytes": elem_bytes})


def elem_bytes(dtype: torch.dtype) -> int:
    return dtype.itemsize


def memoized_config(default_config):
    """``default_config(shape, dtype, device)`` computed once per argument triple (it runs on every op call,
    and validating a config costs microseconds); each call gets its own copy of the dict."""
    cache = {}

    @functools.wraps(default_config)
    def cached(shape, dtype, device):
        key = (tuple(shape), dtype, device)
        config = cache.get(key)
        if config is None:
            if len(cache) > 4096:
                cache.clear()
            config = cache[key] = default_config(tuple(shape), dtype, device)
        return dict(config)
    return cached


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def clamp_pow2(n: int, lo: int, hi: int) -> int:
    """The power of two covering ``n``, kept within [lo, hi] (both powers of two)."""
    return max(lo, min(hi, next_pow2(n)))


# ---- input checks (raised before anything launches, from real and fake implementations alike) ------

def check_tensor(op_name, arg_name, x, ranks=None):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"tilekit::{op_name}: '{arg_name}' must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        names = ", ".join(str(d).replace("torch.", "") for d in FLOAT_DTYPES)
        raise TypeError(f"tilekit::{op_name}: '{arg_name}' has dtype {x.dtype}; supported dtypes are {names}")
    if ranks is not None and x.dim() not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ValueError(f"tilekit::{op_name}: '{arg_name}' must be {want}-D, got shape {tuple(x.shape)} "
                         f"({x.dim()}-D)")


def check_same(op_name, named_tensors):
    """Same dtype and same device for every tensor in ``named_tensors`` ({name: tensor})."""
    items = list(named_tensors.items())
    first_name, first = items[0]
    for name, x in items[1:]:
        if x.device != first.device:
            raise ValueError(f"tilekit::{op_name}: inputs are on different devices: '{first_name}' is on "
                             f"{first.device}, '{name}' is on {x.device}")
        if x.dtype != first.dtype:
            raise TypeError(f"tilekit::{op_name}: inputs have different dtypes: '{first_name}' is {first.dtype}, "
                            f"'{name}' is {x.dtype}")


def gpu_arch_family(device=None, target=None):
    """"sm_80", "sm_90" or "amd": from an AOT target name when given (``sm_90``, ``gfx942``), else from the
    device (ROCm torch: AMD; CUDA: its compute capability). With no GPU to ask (meta examples), sm_90."""
    if target is not None:
        if target.startswith("gfx"):
            return "amd"
        digits = "".join(c for c in target if c.isdigit())
        return "sm_90" if digits and int(digits[:2]) >= 90 else "sm_80"
    if getattr(torch.version, "hip", None):
        return "amd"
    if device is not None and torch.cuda.is_available():
        return "sm_90" if torch.cuda.get_device_capability(device)[0] >= 9 else "sm_80"
    return "sm_90"
