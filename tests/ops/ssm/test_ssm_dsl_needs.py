"""DSL gaps the SSM family hit, as minimal repros; both are fixed in the core and kept as regression tests."""
import pytest
import torch

import tilekit as tk


@tk.kernel
def _softplus_rows(X, Y, BN: tk.constexpr = 8):
    tk.store(Y, (0,), tk.softplus(tk.load(X, (0,), (BN,))))


def test_softplus_keeps_float64_precision():
    x = torch.linspace(-3, 3, 8, dtype=torch.float64)
    y = torch.empty_like(x)
    _softplus_rows[(1,)](x, y, backend="reference")
    torch.testing.assert_close(y, torch.nn.functional.softplus(x), atol=1e-14, rtol=1e-14)


_IF_AROUND_STORES = '''
import torch, tilekit as tk

@tk.kernel
def update_rows(State, X, BD: tk.constexpr = 8, BN: tk.constexpr = 8):
    b = tk.program_id(0)
    slot = b
    if slot >= 0:  # a runtime scalar condition around a load and a store
        s = tk.load(State, (slot, 0, 0), (1, BD, BN)).reshape((BD, BN))
        u = tk.load(X, (b, 0), (1, BD)).reshape((BD,))
        tk.store(State, (slot, 0, 0), (s * 2.0 + u[:, None]).reshape((1, BD, BN)))

S = torch.randn(3, 6, 7); X = torch.randn(3, 6); want = S * 2 + X[:, :, None]
update_rows[(3,)](S, X, backend="opencl", num_warps=1)
assert torch.allclose(S, want)
'''


@pytest.mark.skipif("opencl" not in __import__("conftest").cpu_backends(), reason="no OpenCL device here")
def test_runtime_if_around_stores_on_opencl(tmp_path):
    import subprocess
    import sys
    script = tmp_path / "if_around_stores.py"
    script.write_text(_IF_AROUND_STORES)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
