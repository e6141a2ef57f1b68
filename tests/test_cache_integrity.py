"""The on-disk cache of generated files: what is loaded is what tilekit generated (a file edited, truncated,
filled with garbage or emptied is detected by its content hash and regenerated), an unusable cache
directory falls back to a private temporary one with one warning, concurrent writers never collide, and
file names stay short whatever the kernel is called."""
import builtins
import importlib.util
import os
import subprocess
import sys
import textwrap
import threading
import warnings

import pytest
import torch

import tilekit as tk
from tilekit import cache
from tilekit.kernel import Kernel


@pytest.fixture
def cache_at(monkeypatch, tmp_path):
    """Point TILEKIT_CACHE_DIR at a path and forget what the process resolved before."""
    def point(path):
        monkeypatch.setenv("TILEKIT_CACHE_DIR", str(path))
        monkeypatch.setattr(cache, "_resolved", {})
        return path
    point(tmp_path / "cache")
    return point


@tk.kernel
def double(X, Y, B: tk.constexpr = 32):
    p = tk.program_id(0)
    tk.store(Y, (p * B,), tk.load(X, (p * B,), (B,)) * 2.0)


def _launch_fresh(X):
    """A launch as a new process would make it: a new kernel object, nothing compiled in memory."""
    k = Kernel(double.fn)
    Y = torch.full_like(X, float("nan"))
    k[(tk.cdiv(X.numel(), 32),)](X, Y, backend="triton")
    (ck,) = k._cache.values()
    return Y, ck


TAMPERED = textwrap.dedent("""
    import builtins
    builtins._tilekit_tampered = True
    def double(*args):
        pass
""")


@pytest.mark.parametrize("damage", ["other-python", "truncated", "garbage", "empty", "missing"])
def test_a_damaged_cached_module_is_regenerated(cache_at, damage):
    X = torch.randn(70)
    Y, ck = _launch_fresh(X)
    assert torch.equal(Y, X * 2)
    path, good = ck.path, ck.source
    assert open(path).read() == good
    if damage == "missing":
        os.remove(path)
    else:
        data = {"other-python": TAMPERED.encode(), "truncated": good.encode()[: len(good) // 2],
                "garbage": b"\xff\xfe\x00garbage\x81" * 10, "empty": b""}[damage]
        with open(path, "wb") as f:
            f.write(data)
    builtins.__dict__.pop("_tilekit_tampered", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cache.CacheWarning)
        for _ in range(2):  # the next "process", and the one after: both repaired, both right
            Y, ck = _launch_fresh(X)
            assert torch.equal(Y, X * 2)
            assert not hasattr(builtins, "_tilekit_tampered")
            assert open(ck.path).read() == good == ck.source


def test_a_module_damaged_between_build_and_first_launch_is_regenerated(cache_at):
    """The check runs when the module is loaded, not only when the kernel is built."""
    k = Kernel(double.fn)
    X = torch.randn(40)
    src = k.source("triton", X, X.clone())
    (ck,) = k._cache.values()
    with open(ck.path, "w") as f:
        f.write(TAMPERED)
    builtins.__dict__.pop("_tilekit_tampered", None)
    Y = torch.empty_like(X)
    with pytest.warns(cache.CacheWarning, match="content hash"):
        k[(2,)](X, Y, backend="triton")
    assert torch.equal(Y, X * 2) and not hasattr(builtins, "_tilekit_tampered")
    assert open(ck.path).read() == src


def test_read_generated_without_the_expected_text_checks_the_name_hash(cache_at):
    path = cache.write_generated("test", "stem", "x = 1\n", ".py")
    assert cache.read_generated(path) == (path, "x = 1\n")
    with open(path, "w") as f:
        f.write("x = 2\n")
    with pytest.raises(cache.CacheError, match="content hash"):
        cache.read_generated(path)


def _unusable(kind, tmp_path):
    if kind == "file":
        p = tmp_path / "not-a-dir"
        p.write_text("a file where the cache directory should be")
        return p
    if kind == "proc":  # a directory that exists and is read-only even for root
        if not os.path.isdir("/proc/self"):
            pytest.skip("no /proc here")
        return "/proc/self"
    if os.geteuid() == 0:
        pytest.skip("running as root: a chmod'ed directory stays writable (the 'proc' case covers it)")
    p = tmp_path / "ro"
    p.mkdir()
    p.chmod(0o500)
    return p


@pytest.mark.parametrize("kind", ["file", "proc", "chmod"])
def test_an_unusable_cache_directory_falls_back_with_one_warning(cache_at, tmp_path, kind):
    bad = cache_at(_unusable(kind, tmp_path))
    X = torch.randn(70)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(3):
            Y, ck = _launch_fresh(X)
            assert torch.equal(Y, X * 2)
        d = cache.cache_dir()
    warned = [w for w in seen if issubclass(w.category, cache.CacheWarning)]
    assert len(warned) == 1, [str(w.message) for w in seen]
    assert str(bad) in str(warned[0].message) and d in str(warned[0].message)
    assert d != str(bad) and os.path.isdir(d) and ck.path.startswith(d)


def test_a_cache_subdirectory_that_is_a_file_falls_back(cache_at, tmp_path):
    root = cache_at(tmp_path / "c")
    root.mkdir()
    (root / "triton").write_text("in the way")
    X = torch.randn(70)
    with pytest.warns(cache.CacheWarning):
        Y, ck = _launch_fresh(X)
    assert torch.equal(Y, X * 2) and not ck.path.startswith(str(root))


@pytest.mark.parametrize("cmd", [("info",), ("show", "softmax", "--backend", "triton", "--shape", "64,1000")])
def test_cli_survives_a_cache_path_that_is_a_file(tmp_path, cmd):
    bad = tmp_path / "not-a-dir"
    bad.write_text("x")
    env = dict(os.environ, TILEKIT_CACHE_DIR=str(bad))
    r = subprocess.run([sys.executable, "-m", "tilekit.cli", *cmd], capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("CacheWarning") == 1
    assert ("cache directory" in r.stdout) if cmd[0] == "info" else ("tl.load" in r.stdout)


def test_concurrent_writers_never_collide(cache_at):
    """Temporary files are unique per thread as well as per process."""
    texts = [f"# file {i}\nvalue = {i}\n" * 50 for i in range(300)]  # every thread races on every new file
    errors, paths = [], []
    start = threading.Barrier(16)

    def writer():
        start.wait()
        try:
            for t in texts:
                paths.append((cache.write_generated("race", "same_stem", t, ".py"), t))
        except Exception as e:  # pragma: no cover - what the test is for
            errors.append(e)

    threads = [threading.Thread(target=writer) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    for p, t in paths:
        assert open(p).read() == t
    assert len(paths) == 16 * len(texts)
    assert sorted(os.listdir(os.path.dirname(paths[0][0]))) == sorted({os.path.basename(p) for p, _ in paths})


def test_sixteen_threads_compiling_at_once(cache_at):
    X = torch.randn(70)
    errors, results = [], []
    start = threading.Barrier(16)

    def launch(i):
        start.wait()
        try:
            k = Kernel(double.fn)
            Y = torch.empty_like(X)
            k[(3,)](X, Y, B=32 if i % 2 else 64, backend="triton")
            results.append(torch.equal(Y, X * 2))
        except Exception as e:  # pragma: no cover - what the test is for
            errors.append(e)

    threads = [threading.Thread(target=launch, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert results == [True] * 16


def _kernel_named(tmp_path, name):
    src = textwrap.dedent(f"""
        import tilekit as tk

        @tk.kernel
        def {name}(X, Y, B: tk.constexpr = 32):
            p = tk.program_id(0)
            tk.store(Y, (p * B,), tk.load(X, (p * B,), (B,)) + 1.0)
    """)
    path = tmp_path / "long_named_kernel.py"
    path.write_text(src, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("long_named_kernel", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, name)


@pytest.mark.parametrize("name", ["k" * 250, "k_" + "x" * 300, "ядро_" * 30], ids=["250", "302", "unicode-150"])
def test_generated_file_names_are_bounded(cache_at, tmp_path, name):
    k = _kernel_named(tmp_path, name)
    X = torch.randn(50)
    Y = torch.empty_like(X)
    k[(2,)](X, Y, backend="triton")
    assert torch.equal(Y, X + 1)
    (ck,) = k._cache.values()
    base = os.path.basename(ck.path)
    assert len(base.encode()) <= 80 and base.isascii(), base


def test_distinct_long_names_get_distinct_files(cache_at, tmp_path):
    a = cache.write_generated("t", "k" * 300 + "a", "a = 1\n", ".py")
    b = cache.write_generated("t", "k" * 300 + "b", "a = 2\n", ".py")
    assert a != b and open(a).read() == "a = 1\n" and open(b).read() == "a = 2\n"
