"""DSL gaps the SSM family hit, as minimal failing repros (xfail strict: a fix is noticed)."""
import pytest
import torch

import tilekit as tk


@tk.kernel
def _softplus_rows(X, Y, BN: tk.constexpr = 8):
    tk.store(Y, (0,), tk.softplus(tk.load(X, (0,), (BN,))))


@pytest.mark.xfail(strict=True, reason="tk.softplus of a float64 tile rounds through fp32 on the reference "
                                       "backend (error ~1e-8 instead of ~1e-16); ops/ssm writes log(1 + exp(x))")
def test_softplus_keeps_float64_precision():
    x = torch.linspace(-3, 3, 8, dtype=torch.float64)
    y = torch.empty_like(x)
    _softplus_rows[(1,)](x, y, backend="reference")
    torch.testing.assert_close(y, torch.nn.functional.softplus(x), atol=1e-14, rtol=1e-14)
