"""Where tilekit keeps generated files: ``$TILEKIT_CACHE_DIR`` or ``~/.cache/tilekit``."""
import hashlib
import os


def cache_dir() -> str:
    d = os.environ.get("TILEKIT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tilekit")
    os.makedirs(d, exist_ok=True)
    return d


def write_generated(kind: str, stem: str, text: str, suffix: str) -> str:
    """Write ``text`` under ``cache_dir()/kind`` with a content-hashed name; return the path."""
    h = hashlib.sha256(text.encode()).hexdigest()[:16]
    d = os.path.join(cache_dir(), kind)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"{stem}_{h}{suffix}")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return path
