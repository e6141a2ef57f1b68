"""The dispatch table and the runtime lookup, without running a tuner: exact -> nearest bucket -> default,
hard and soft keys, stale kernel hashes, corrupt tables, TILEKIT_TUNING=off|on|strict, concurrent writers,
the warm lookup's cost, and no pickle anywhere in a table."""
import json
import multiprocessing
import os

import pytest
import torch

import tilekit.ops  # noqa: F401  (installs the lookup and registers the kernels)
from tilekit.autotune import lookup, table
from tilekit.autotune.device import fingerprint
from tilekit.autotune.protocol import kernels
from tilekit.ops.matmul import op as matmul_op

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("fresh_tuning_cache")


def _entry(shape, config, kernel="matmul.main", dtype="float32", **over):
    fp = fingerprint("reference")
    k = kernels()[kernel]
    e = {"kernel": kernel, "dtype": dtype, "shape": list(shape), "bucket": list(k.bucket_key(shape)), "flags": {},
         "config": config, "tuned_s": 1e-3, "default_s": 2e-3, "trials": 5, "study": "test",
         "kernel_hash": k.kernel.source_hash, "tilekit": fp["tilekit"], "driver": fp["driver"],
         "runtime": fp["runtime"]}
    e.update(over)
    return e


def _write(*entries, device=None):
    fp = dict(fingerprint("reference"))
    fp.update(device or {})
    path = table.table_path(fingerprint("reference"))
    for e in entries:
        table.upsert(path, fp, e)
    return path


SMALL = {"BM": 16, "BN": 32, "BK": 16, "num_warps": 2, "num_stages": 1}
OTHER = {"BM": 32, "BN": 16, "BK": 32, "num_warps": 4, "num_stages": 1}


def test_exact_shape_then_nearest_bucket_then_default():
    _write(_entry((64, 64, 64), SMALL), _entry((512, 512, 512), OTHER))
    assert lookup.provider("matmul.main", (64, 64, 64), torch.float32, CPU, "reference") == SMALL
    assert lookup.provider("matmul.main", (60, 70, 50), torch.float32, CPU, "reference") == SMALL
    assert lookup.provider("matmul.main", (400, 600, 300), torch.float32, CPU, "reference") == OTHER
    # Another dtype or kernel has no entry: the default (None).
    assert lookup.provider("matmul.main", (64, 64, 64), torch.float16, CPU, "reference") is None
    assert lookup.provider("softmax.forward", (64, 64), torch.float32, CPU, "reference") is None


def test_the_op_launches_the_looked_up_config(monkeypatch):
    _write(_entry((33, 17, 70), SMALL))
    seen = []
    real = matmul_op.launch_args
    monkeypatch.setattr(matmul_op, "launch_args", lambda i, o, c: (seen.append(dict(c)), real(i, o, c))[1])
    a, b = torch.randn(33, 70), torch.randn(70, 17)
    torch.testing.assert_close(torch.ops.tilekit.matmul(a, b), a @ b, atol=1e-4, rtol=1e-4)
    assert seen == [SMALL]


def test_missing_and_corrupt_tables_give_defaults_and_one_warning(monkeypatch):
    with pytest.warns(lookup.TuningWarning, match="no dispatch table"):
        assert lookup.provider("matmul.main", (8, 8, 8), torch.float32, CPU, "reference") is None
    path = _write(_entry((8, 8, 8), SMALL))
    with open(path, "w") as f:
        f.write('{"format": "tilekit-dispatch-1", "entries": [')  # cut short
    lookup.reset()
    with pytest.warns(lookup.TuningWarning, match="unreadable") as record:
        assert lookup.provider("matmul.main", (8, 8, 8), torch.float32, CPU, "reference") is None
        assert lookup.provider("matmul.main", (9, 9, 9), torch.float32, CPU, "reference") is None
    assert len([w for w in record if issubclass(w.category, lookup.TuningWarning)]) == 1
    monkeypatch.setenv("TILEKIT_TUNING", "strict")
    lookup.reset()
    with pytest.raises(lookup.TuningError, match="unreadable"):
        lookup.provider("matmul.main", (8, 8, 8), torch.float32, CPU, "reference")


def test_a_table_of_another_device_is_ignored_with_a_warning(monkeypatch):
    _write(_entry((8, 8, 8), SMALL), device={"device": "Some Other CPU", "arch": "riscv64"})
    with pytest.warns(lookup.TuningWarning, match="another device"):
        assert lookup.provider("matmul.main", (8, 8, 8), torch.float32, CPU, "reference") is None
    monkeypatch.setenv("TILEKIT_TUNING", "strict")
    lookup.reset()
    with pytest.raises(lookup.TuningError, match="another device"):
        lookup.provider("matmul.main", (8, 8, 8), torch.float32, CPU, "reference")


def test_a_stale_kernel_hash_drops_only_that_kernels_entries(monkeypatch):
    _write(_entry((8, 8, 8), SMALL, kernel_hash="0123456789abcdef"),
           _entry((8, 8), {"BM": 2, "BN": 16, "num_warps": 1}, kernel="softmax.forward"))
    with pytest.warns(lookup.TuningWarning, match="another version of the kernel"):
        assert lookup.provider("matmul.main", (8, 8, 8), torch.float32, CPU, "reference") is None
    assert lookup.provider("softmax.forward", (8, 8), torch.float32, CPU, "reference") == {
        "BM": 2, "BN": 16, "num_warps": 1}
    monkeypatch.setenv("TILEKIT_TUNING", "strict")
    lookup.reset()
    with pytest.raises(lookup.TuningError, match="another version"):
        lookup.provider("matmul.main", (8, 8, 8), torch.float32, CPU, "reference")


def test_soft_key_mismatch_is_used_with_a_warning():
    _write(_entry((8, 8, 8), SMALL, runtime="numpy 0.1"))
    with pytest.warns(lookup.TuningWarning, match="other versions"):
        assert lookup.provider("matmul.main", (8, 8, 8), torch.float32, CPU, "reference") == SMALL


def test_an_invalid_table_config_is_dropped_and_the_default_runs():
    too_big = {"BM": 256, "BN": 256, "BK": 16, "num_warps": 2, "num_stages": 1}  # rule: too many per thread
    _write(_entry((5, 3, 7), too_big))
    a, b = torch.randn(5, 7), torch.randn(7, 3)
    with pytest.warns(lookup.TuningWarning, match="invalid"):
        out = torch.ops.tilekit.matmul(a, b)
    torch.testing.assert_close(out, a @ b, atol=1e-4, rtol=1e-4)


def test_tuning_off_disables_lookup(monkeypatch):
    _write(_entry((8, 8, 8), SMALL))
    monkeypatch.setenv("TILEKIT_TUNING", "off")
    lookup.reset()
    assert lookup.provider("matmul.main", (8, 8, 8), torch.float32, CPU, "reference") is None
    monkeypatch.setenv("TILEKIT_TUNING", "sometimes")
    lookup.reset()
    with pytest.raises(lookup.TuningError, match="off, on, strict"):
        lookup.provider("matmul.main", (8, 8, 8), torch.float32, CPU, "reference")


def test_a_warm_lookup_reads_nothing_and_validates_nothing_again(monkeypatch):
    """Warm calls answer from memory: neither the table nor the kernel's validity rule is consulted again
    (its cost, ~0.2 us, is measured by `python -m tilekit.bench.host_overhead`, not timed here)."""
    from tilekit.ops import dispatch
    from tilekit.ops.matmul.kernels import MATMUL_TUNABLES
    _write(_entry((8, 8, 8), SMALL))
    args = ("matmul.main", (8, 8, 8), torch.float32, CPU, "reference")
    first = dispatch.provided_config(*args, MATMUL_TUNABLES, 4)
    assert first == SMALL

    def boom(*a, **kw):
        raise AssertionError("consulted again on a warm call")
    monkeypatch.setattr(lookup, "_look_up", boom)
    monkeypatch.setattr(table, "read", boom)
    monkeypatch.setattr(type(MATMUL_TUNABLES), "why_invalid", boom)
    again = dispatch.provided_config(*args, MATMUL_TUNABLES, 4)
    assert again == SMALL
    again["BM"] = -1  # each call gets its own copy: a caller's edit cannot reach the cached answer
    assert dispatch.provided_config(*args, MATMUL_TUNABLES, 4) == SMALL


def _write_many(cache, start):
    os.environ["TILEKIT_CACHE_DIR"] = cache
    for i in range(start, start + 10):
        _write(_entry((i + 1, 8, 8), SMALL))


def test_concurrent_writers_lose_no_entry(tmp_path):
    cache = os.environ["TILEKIT_CACHE_DIR"]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_many, args=(cache, 10 * i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    data = table.read(table.table_path(fingerprint("reference")))
    assert sorted(e["shape"][0] for e in data["entries"]) == list(range(1, 41))


def test_tables_hold_plain_json_and_no_pickle():
    path = _write(_entry((8, 8, 8), SMALL))
    raw = open(path, "rb").read()
    data = json.loads(raw)
    assert data["entries"][0]["config"] == SMALL
    assert b"\x80\x04" not in raw and b"pickle" not in raw
