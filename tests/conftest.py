"""Shared test configuration: Hypothesis profiles, and the backend lists tests parametrize over (read from
the backend registry, ``tilekit.backends.REGISTRY``, never restated).

``ci`` (loaded when the ``CI`` environment variable is set) is derandomized with a bounded number of
examples and no deadline, so the suite's time is predictable: the Triton interpreter costs about 3 ms
per (program x loop iteration), and a first launch of each specialization also compiles. ``dev`` draws
fresh examples every run. ``HYPOTHESIS_PROFILE`` picks one explicitly.
"""
import functools
import os

from hypothesis import HealthCheck, settings

from tilekit.backends import BACKENDS, record, runnable_backends  # noqa: F401  (BACKENDS: for tests to import)


@functools.lru_cache(maxsize=None)
def cpu_backends(cstyle=None):
    """The backends that execute kernels on CPU tensors here (and are installed); ``cstyle=False``: only
    those not built by the C-style emitter (reference and the Triton interpreter: the Python-level ones)."""
    return tuple(b for b in runnable_backends("cpu") if cstyle is None or record(b).cstyle == cstyle)

settings.register_profile(
    "ci",
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "dev",
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


import pytest  # noqa: E402

import tilekit.frontend  # noqa: E402  (count_builds wraps its build_function)


@pytest.fixture
def count_builds(monkeypatch):
    """The constexprs of every front-end build from here on: a cache hit adds nothing."""
    calls = []
    real = tilekit.frontend.build_function

    def counting(kernel, arg_specs, constexprs):
        calls.append(dict(constexprs))
        return real(kernel, arg_specs, constexprs)

    monkeypatch.setattr(tilekit.frontend, "build_function", counting)
    return calls


@pytest.fixture
def fresh_tuning_cache(tmp_path, monkeypatch):
    """A private cache directory and an empty in-memory dispatch-table cache, with tuning lookup on."""
    from tilekit.autotune import lookup
    monkeypatch.setenv("TILEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TILEKIT_TUNING", raising=False)
    lookup.reset()
    yield
    lookup.reset()
