"""Where tilekit keeps generated files: ``$TILEKIT_CACHE_DIR`` or ``~/.cache/tilekit``.

Files are named by a hash of their content, and what is read back is checked against it: a file that
was edited, truncated or emptied is regenerated (with a warning), never run. A cache directory that
cannot be written (read-only, or a path that is a file) is replaced, for the rest of the process, by a
private temporary directory, with one warning.
"""
from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import tempfile
import threading
import warnings


class CacheWarning(UserWarning):
    """The cache directory is unusable (a temporary one is used instead), or a cached file was damaged."""


class CacheError(OSError):
    """A cached file does not match its content hash and there is nothing to regenerate it from."""


_resolved = {}          # configured directory -> the directory in use (itself, or the private fallback)
_private = None         # this process's fallback directory, made on first need
_lock = threading.Lock()

# File names: a readable, bounded ASCII prefix of the stem (a kernel name may be hundreds of characters,
# or not ASCII), then the content hash, which alone makes the name unique.
_STEM_CHARS = re.compile(r"[^A-Za-z0-9_]+")
_STEM_MAX = 40
_DIGEST_CHARS = 16


def _configured() -> str:
    return os.environ.get("TILEKIT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tilekit")


def _usable(d: str):
    """None if files can be created in ``d`` (made if missing), else the error that says why not."""
    try:
        os.makedirs(d, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=d, prefix=".tilekit-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        return e
    return None


def _fall_back(configured: str, error) -> str:
    """Use the private temporary directory instead of ``configured`` from now on (caller holds the lock)."""
    global _private
    if _private is None:
        _private = tempfile.mkdtemp(prefix="tilekit-cache-")
        atexit.register(shutil.rmtree, _private, True)
    _resolved[configured] = _private
    warnings.warn(f"tilekit: the cache directory {configured} cannot be used ({error}); generated files go to "
                  f"a private temporary directory {_private} for the rest of this process. Set "
                  f"TILEKIT_CACHE_DIR to a writable directory to keep them.", CacheWarning, stacklevel=3)
    return _private


def cache_dir() -> str:
    """The directory generated files go to: the configured one if it can be written, else a private
    temporary one (decided once per configured path and process, with one warning)."""
    configured = _configured()
    d = _resolved.get(configured)
    if d is None:
        with _lock:
            d = _resolved.get(configured)
            if d is None:
                error = _usable(configured)
                d = _resolved[configured] = configured if error is None else _fall_back(configured, error)
    return d


def _give_up_on(root: str, error) -> None:
    """A write under ``root`` failed after all (a subdirectory in the way, a disk turned read-only)."""
    with _lock:
        for configured, d in list(_resolved.items()):
            if d == root and d != _private:
                _fall_back(configured, error)
        if root == _private:
            raise error


def generated_name(stem: str, data: bytes, suffix: str) -> str:
    stem = _STEM_CHARS.sub("_", stem)[:_STEM_MAX].strip("_") or "generated"
    return f"{stem}_{hashlib.sha256(data).hexdigest()[:_DIGEST_CHARS]}{suffix}"


def _holds(path: str, data: bytes):
    """True if ``path`` holds exactly ``data``, None if there is no such file, False if it holds else."""
    try:
        with open(path, "rb") as f:
            return f.read() == data
    except FileNotFoundError:
        return None


def _warn_damaged(path):
    warnings.warn(f"tilekit: the cached file {path} does not match its content hash (edited, truncated or "
                  f"damaged); it is regenerated", CacheWarning, stacklevel=4)


def _write_atomic(d: str, path: str, data: bytes) -> None:
    """Write through a temporary file unique to this call (threads of one process included) and rename
    it into place, so no reader ever sees a partial file and no two writers share a temporary."""
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def _materialize(kind: str, name: str, data: bytes) -> str:
    for attempt in range(2):
        root = cache_dir()
        d = os.path.join(root, kind)
        path = os.path.join(d, name)
        try:
            held = _holds(path, data)
            if not held:
                if held is False:
                    _warn_damaged(path)
                os.makedirs(d, exist_ok=True)
                _write_atomic(d, path, data)
            return path
        except OSError as e:
            if attempt:
                raise
            _give_up_on(root, e)
    raise AssertionError("unreachable")


def write_generated(kind: str, stem: str, text, suffix: str) -> str:
    """Make sure ``cache_dir()/kind`` holds ``text`` (str or bytes) under its content-hashed name, writing
    it if the file is missing or holds anything else; return the path."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    return _materialize(kind, generated_name(stem, data, suffix), data)


def read_generated(path: str, text=None):
    """(path, text) of a generated file, checked before anyone runs it. With ``text`` (what the file must
    hold) a file that differs is regenerated, with a warning, and the path returned is where it now is.
    Without it the file is checked against the content hash in its name; a mismatch raises CacheError."""
    if text is not None:
        data = text.encode() if isinstance(text, str) else bytes(text)
        if _holds(path, data):
            return path, text
        return _materialize(os.path.basename(os.path.dirname(path)), os.path.basename(path), data), text
    with open(path, "rb") as f:
        data = f.read()
    stem = os.path.basename(path).split(".", 1)[0]
    if hashlib.sha256(data).hexdigest()[:_DIGEST_CHARS] != stem.rsplit("_", 1)[-1]:
        raise CacheError(f"the cached file {path} does not match the content hash in its name (edited, truncated "
                         f"or damaged); delete it and regenerate it")
    return path, data.decode()
