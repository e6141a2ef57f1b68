"""The dispatch table: one human-readable JSON file per device key, in ``<cache>/tuning/``.

    {"format": "tilekit-dispatch-1",
     "device": {"device": ..., "arch": ..., "backend": ...},
     "entries": [{"kernel": "matmul.main", "dtype": "float32", "shape": [M, N, K], "bucket": [...],
                  "flags": {}, "config": {...}, "tuned_s": ..., "default_s": ..., "trials": ..., "study": ...,
                  "kernel_hash": ..., "tilekit": ..., "driver": ..., "runtime": ...}, ...]}

Only JSON values go in (no pickle). Every write is a read-modify-write under a ``filelock`` lock, to a
temporary file that then replaces the table (``os.replace``), so readers never see half a file and two
tuners writing at once never lose an entry.
"""
from __future__ import annotations

import json
import os
import tempfile

from .device import HARD_KEYS, table_name

FORMAT = "tilekit-dispatch-1"


class TableError(ValueError):
    """A dispatch table that cannot be read (bad JSON, wrong format)."""


def tuning_dir() -> str:
    from tilekit.cache import cache_dir
    path = os.path.join(cache_dir(), "tuning")
    os.makedirs(path, exist_ok=True)
    return path


def table_path(fp: dict) -> str:
    """Where the table of the device key ``fp`` (a fingerprint, or just its hard keys) lives."""
    return os.path.join(tuning_dir(), table_name(fp))


def read(path: str) -> dict:
    """The table at ``path``; an empty one if there is no file; ``TableError`` if it is corrupt."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {"format": FORMAT, "device": None, "entries": []}
    except (OSError, ValueError) as e:
        raise TableError(f"dispatch table {path} is unreadable: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), list):
        raise TableError(f"dispatch table {path} is not a {FORMAT} table")
    return data


def _write_atomic(path: str, data: dict):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def entry_key(e: dict):
    return (e["kernel"], e["dtype"], tuple(e["shape"]), tuple(sorted(e.get("flags", {}).items())))


def lock_for(path: str):
    # A lock file beside the table; flock dies with its holder, so a killed writer leaves no stale lock.
    # filelock comes with the `tune` extra: only writers need it, reading a table does not.
    from filelock import FileLock
    return FileLock(path + ".lock", timeout=60)


def upsert(path: str, device: dict, entry: dict):
    """Add ``entry`` to the table at ``path`` (replacing one with the same kernel, dtype, shape and flags)."""
    with lock_for(path):
        try:
            data = read(path)
        except TableError:
            data = {"format": FORMAT, "device": None, "entries": []}  # a corrupt table is rewritten
        data["device"] = {k: device[k] for k in HARD_KEYS}
        key = entry_key(entry)
        data["entries"] = [e for e in data["entries"] if entry_key(e) != key] + [entry]
        _write_atomic(path, data)
    return data


def replace_all(path: str, data: dict):
    with lock_for(path):
        _write_atomic(path, data)


def remove(path: str, op: str | None = None) -> int:
    """Drop every entry (or those of ``op`` / ``OP.KERNEL``); returns how many went."""
    with lock_for(path):
        data = read(path)
        keep = [e for e in data["entries"]
                if op is not None and e["kernel"] != op and e["kernel"].split(".")[0] != op]
        gone = len(data["entries"]) - len(keep)
        data["entries"] = keep
        if keep:
            _write_atomic(path, data)
        else:
            os.unlink(path)
    return gone


def all_tables():
    """[(path, table or TableError)] for every table in the tuning directory."""
    out = []
    d = tuning_dir()
    for name in sorted(os.listdir(d)):
        if name.endswith(".json") and not name.startswith("."):
            path = os.path.join(d, name)
            try:
                out.append((path, read(path)))
            except TableError as e:
                out.append((path, e))
    return out
