"""The runtime lookup: ``provider(kernel_id, shape_key, dtype, device, backend) -> config | None``.

``import tilekit.ops`` installs ``provider``. For a call it reads this device's dispatch table once and
answers from memory afterwards (a warm call is one dict lookup). The order: the exact shape, then the
nearest bucket (the kernel's ``bucket_key`` and ``bucket_distance``; flags must match exactly), then None
(the op's default).

``TILEKIT_TUNING`` (read when the table is first consulted; ``reset()`` reads it again):
  ``on`` (default): a missing or corrupt table, an entry of another device or of an edited kernel (hard
  keys) gives the defaults and one warning; an entry whose tilekit/driver/runtime versions differ (soft
  keys) is used, with a warning;
  ``strict``: each of those warnings is a ``TuningError``;
  ``off``: no lookup at all.
"""
from __future__ import annotations

import os
import warnings

from . import table
from .device import HARD_KEYS, SOFT_KEYS, fingerprint

MODE_ENV = "TILEKIT_TUNING"
MODES = ("off", "on", "strict")


class TuningWarning(UserWarning):
    pass


class TuningError(RuntimeError):
    pass


_answers: dict = {}        # (kernel_id, shape_key, dtype, device, backend) -> config or None
_tables: dict = {}         # (backend, device type, index) -> (fingerprint, entries usable on it)
_warned: set = set()
_mode = None


def mode() -> str:
    global _mode
    if _mode is None:
        value = os.environ.get(MODE_ENV, "on").strip().lower() or "on"
        if value not in MODES:
            raise TuningError(f"${MODE_ENV}={value!r}: choose one of {', '.join(MODES)}")
        _mode = value
    return _mode


def reset():
    """Forget every cached answer and table, and read ``$TILEKIT_TUNING`` again (after a tune or import)."""
    global _mode
    _answers.clear()
    _tables.clear()
    _warned.clear()
    _mode = None


def warn(message: str, key=None):
    """One warning per ``key`` (default: the message); under strict mode a TuningError instead."""
    if mode() == "strict":
        raise TuningError(message + f" (${MODE_ENV}=strict)")
    key = key or message
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, TuningWarning, stacklevel=4)


def provider(kernel_id, shape_key, dtype, device, backend):
    key = (kernel_id, shape_key, dtype, device, backend)
    try:
        return _answers[key]
    except KeyError:
        pass
    answer = None if mode() == "off" else _look_up(kernel_id, tuple(shape_key), dtype, device, backend)
    _answers[key] = answer
    return answer


def _usable_entries(backend, device):
    index = device.index or 0
    tkey = (backend, device.type, index)
    if tkey in _tables:
        return _tables[tkey]
    try:
        fp = fingerprint(backend, device.type, index)
    except Exception:  # a device this process cannot reach (a CUDA config asked for by `tilekit show`)
        _tables[tkey] = (None, [])
        return _tables[tkey]
    path = table.table_path(fp)
    entries = []
    try:
        data = table.read(path)
    except table.TableError as e:
        warn(f"tilekit tuning: {e}; using the ops' default configs")
        data = None
    if data is not None and not os.path.exists(path):
        warn(f"tilekit tuning: no dispatch table for {fp['device']} ({fp['arch']}, {backend}) at {path}; "
             f"using the ops' default configs (run `tilekit tune --backend {backend}`)", key=("missing", path))
    elif data is not None:
        entries = _check_device(data, fp, path)
    _tables[tkey] = (fp, entries)
    return _tables[tkey]


def _check_device(data, fp, path):
    recorded = data.get("device") or {}
    bad = [k for k in HARD_KEYS if recorded.get(k) != fp[k]]
    if bad:
        warn(f"tilekit tuning: dispatch table {path} was tuned for another device "
             f"({', '.join(f'{k}={recorded.get(k)!r}, here {fp[k]!r}' for k in bad)}); using the defaults")
        return []
    return [e for e in data["entries"] if isinstance(e, dict) and "kernel" in e]


def _look_up(kernel_id, shape, dtype, device, backend):
    from .protocol import kernels
    fp, entries = _usable_entries(backend, device)
    dtype_name = str(dtype).replace("torch.", "")
    mine = [e for e in entries if e["kernel"] == kernel_id and e.get("dtype") == dtype_name]
    if not mine:
        return None
    tk_kernel = kernels().get(kernel_id)
    if tk_kernel is None:
        return None
    current_hash = tk_kernel.kernel.source_hash
    fresh = []
    for e in mine:
        if e.get("kernel_hash") != current_hash:
            warn(f"tilekit tuning: the table's {kernel_id} entries were tuned for another version of the kernel "
                 f"(hash {e.get('kernel_hash')}, now {current_hash}); they are ignored until it is re-tuned",
                 key=("stale", kernel_id))
        else:
            fresh.append(e)
    if not fresh:
        return None
    size_shape, flags = shape, {}
    if tk_kernel.flags and len(shape) > len(tk_kernel.shape_names):  # the shape key carries its flags
        size_shape = shape[:len(tk_kernel.shape_names)]
        flags = dict(shape[len(tk_kernel.shape_names):])
    same_flags = [e for e in fresh if dict(e.get("flags", {})) == flags]
    exact = [e for e in same_flags if tuple(e["shape"]) == size_shape]
    if exact:
        best = exact[0]
    elif same_flags:
        want = tk_kernel.bucket_key(size_shape, flags)
        best = min(same_flags, key=lambda e: (tk_kernel.bucket_distance(tuple(e["bucket"]), want),
                                              tk_kernel.bucket_distance(tuple(e["shape"]), size_shape)))
    else:
        return None
    soft = [k for k in SOFT_KEYS if best.get(k) != fp[k]]
    if soft:
        warn(f"tilekit tuning: {kernel_id} was tuned under other versions "
             f"({', '.join(f'{k} {best.get(k)!r}, here {fp[k]!r}' for k in soft)}); using it anyway",
             key=("soft", kernel_id))
    return dict(best["config"])
