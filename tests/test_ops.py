"""torch.ops.tilekit.matmul / softmax: correctness against PyTorch, autograd, opcheck, torch.compile,
backend and config choice, input validation.

Expected values come from PyTorch in float64 on the same (already rounded) inputs, never from tilekit
itself; tolerances come from tilekit.tolerances. The Triton interpreter is kept to fp32/fp16 (it computes
bf16 wrongly) and to shapes that need only a few programs.
"""
import pytest
import torch
from torch.library import opcheck

import tilekit.ops as tk_ops
from tilekit.ops.matmul import op as matmul_module
from tilekit.ops.softmax import op as softmax_module
from tilekit.tolerances import assert_close

REFERENCE_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
INTERPRETER_DTYPES = [torch.float32, torch.float16]

# (M, K, N): ragged, non-power-of-two; 1x1x1; K of 3 (less than any block); edges just past a block.
MATMUL_SHAPES = [(1, 1, 1), (33, 70, 17), (100, 3, 129), (5, 129, 2)]
# Bigger than one block in every dim on the reference backend (several programs, several K steps).
MATMUL_MULTI_BLOCK = (130, 300, 129)

# Rows x row length: 1x1, shorter than a block, ragged, longer than the widest block (4097 > 2048).
SOFTMAX_SHAPES = [(1, 1), (5, 3), (7, 1000), (3, 4097), (2, 3, 129), (100,)]


def _randn(shape, dtype, seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)


def _expected_matmul(a, b):
    return a.double() @ b.double()


def _expected_softmax(x):
    return torch.softmax(x.double(), dim=-1)


@pytest.fixture
def backend(request):
    """Run the test body with every tilekit op on ``request.param``."""
    with tk_ops.use_backend(request.param):
        yield request.param


# ---- matmul forward ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", REFERENCE_DTYPES, ids=str)
@pytest.mark.parametrize("shape", MATMUL_SHAPES + [MATMUL_MULTI_BLOCK], ids=str)
def test_matmul_matches_torch_on_reference(shape, dtype):
    m, k, n = shape
    a, b = _randn((m, k), dtype, 1), _randn((k, n), dtype, 2)
    c = torch.ops.tilekit.matmul(a, b)
    assert c.shape == (m, n) and c.dtype == dtype
    assert_close(c, _expected_matmul(a, b), dtype=dtype)


@pytest.mark.parametrize("backend", ["triton"], indirect=True)
@pytest.mark.parametrize("dtype", INTERPRETER_DTYPES, ids=str)
@pytest.mark.parametrize("shape", MATMUL_SHAPES, ids=str)
def test_matmul_matches_torch_on_triton_interpreter(backend, shape, dtype):
    m, k, n = shape
    a, b = _randn((m, k), dtype, 3), _randn((k, n), dtype, 4)
    c = torch.ops.tilekit.matmul(a, b)
    assert c.dtype == dtype
    assert_close(c, _expected_matmul(a, b), dtype=dtype)


@pytest.mark.parametrize("backend", ["reference", "triton"], indirect=True)
def test_matmul_reads_strided_inputs(backend):
    # Transposed views are what the backward pass feeds in; they must not be read as if contiguous.
    a = _randn((40, 33), torch.float32, 5).T
    b = _randn((17, 40), torch.float32, 6).T
    assert not a.is_contiguous() and not b.is_contiguous()
    assert_close(torch.ops.tilekit.matmul(a, b), _expected_matmul(a, b), dtype=torch.float32)


def test_matmul_several_k_steps_with_a_small_block(monkeypatch):
    # Force BK=16 so K=70 takes five loop steps, the last one partial.
    config = {"BM": 16, "BN": 16, "BK": 16, "num_warps": 2, "num_stages": 1}
    previous = tk_ops.set_config_provider(lambda kid, shape, dtype, device, backend: config if kid == "matmul.main" else None)
    try:
        a, b = _randn((33, 70), torch.float32, 7), _randn((70, 17), torch.float32, 8)
        assert_close(torch.ops.tilekit.matmul(a, b), _expected_matmul(a, b), dtype=torch.float32)
    finally:
        tk_ops.set_config_provider(previous)


def test_matmul_empty_dimensions():
    a, b = _randn((4, 0), torch.float32, 9), _randn((0, 3), torch.float32, 10)
    assert torch.equal(torch.ops.tilekit.matmul(a, b), torch.zeros(4, 3))  # a sum over nothing is 0
    empty = torch.ops.tilekit.matmul(_randn((0, 5), torch.float32, 11), _randn((5, 3), torch.float32, 12))
    assert empty.shape == (0, 3)


def test_matmul_reference_function_agrees_with_torch():
    a, b = _randn((9, 13), torch.float16, 13), _randn((13, 6), torch.float16, 14)
    assert tk_ops.matmul_reference(a, b).dtype == torch.float16
    assert_close(tk_ops.matmul_reference(a, b), _expected_matmul(a, b), dtype=torch.float16)


# ---- softmax forward -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", REFERENCE_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=str)
def test_softmax_matches_torch_on_reference(shape, dtype):
    x = _randn(shape, dtype, 20, scale=3.0)
    y = torch.ops.tilekit.softmax(x)
    assert y.shape == x.shape and y.dtype == dtype
    assert_close(y, _expected_softmax(x), dtype=dtype)


@pytest.mark.parametrize("backend", ["triton"], indirect=True)
@pytest.mark.parametrize("dtype", INTERPRETER_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (3, 4097), (2, 3, 129)], ids=str)
def test_softmax_matches_torch_on_triton_interpreter(backend, shape, dtype):
    x = _randn(shape, dtype, 21, scale=3.0)
    y = torch.ops.tilekit.softmax(x)
    assert y.dtype == dtype
    assert_close(y, _expected_softmax(x), dtype=dtype)


@pytest.mark.parametrize("backend", ["reference", "triton"], indirect=True)
def test_softmax_online_rescaling_across_many_blocks(backend):
    # BN=16 over 1000 columns: 63 blocks. One row rises left to right, so the running max changes in
    # every block and the running sum must be rescaled each time; one falls, so it never changes.
    config = {"BM": 2, "BN": 16, "num_warps": 1}
    previous = tk_ops.set_config_provider(lambda kid, shape, dtype, device, backend: config if kid == "softmax.forward" else None)
    try:
        ramp = torch.linspace(-20.0, 20.0, 1000)
        x = torch.stack([ramp, ramp.flip(0), _randn(1000, torch.float32, 22, scale=5.0)])
        assert_close(torch.ops.tilekit.softmax(x), _expected_softmax(x), dtype=torch.float32)
    finally:
        tk_ops.set_config_provider(previous)


def test_softmax_is_stable_for_large_inputs():
    # exp(1000) overflows fp32: a correct kernel subtracts the row max first.
    x = _randn((4, 300), torch.float32, 23) + 1000.0
    y = torch.ops.tilekit.softmax(x)
    assert torch.isfinite(y).all()
    assert_close(y, _expected_softmax(x), dtype=torch.float32)


def test_softmax_masked_entries_get_zero_probability():
    x = _randn((3, 70), torch.float32, 24)
    x[:, ::3] = -float("inf")
    y = torch.ops.tilekit.softmax(x)
    assert torch.equal(y[:, ::3], torch.zeros_like(y[:, ::3]))
    assert_close(y, _expected_softmax(x), dtype=torch.float32)


def test_softmax_reads_strided_input():
    x = _randn((50, 6), torch.float32, 25).T  # rows of 50 with stride 6 between columns
    assert_close(torch.ops.tilekit.softmax(x), _expected_softmax(x), dtype=torch.float32)


def test_softmax_empty_input():
    assert torch.ops.tilekit.softmax(torch.empty(0, 7)).shape == (0, 7)
    assert torch.ops.tilekit.softmax(torch.empty(3, 0)).shape == (3, 0)


# ---- gradients -----------------------------------------------------------------------------------

def test_matmul_gradcheck_float64():
    a = _randn((4, 6), torch.float64, 30).requires_grad_()
    b = _randn((6, 3), torch.float64, 31).requires_grad_()
    assert torch.autograd.gradcheck(torch.ops.tilekit.matmul, (a, b))


def test_softmax_gradcheck_float64():
    x = _randn((3, 37), torch.float64, 32).requires_grad_()
    assert torch.autograd.gradcheck(torch.ops.tilekit.softmax, (x,))


def _grads(fn, inputs, weight):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    (fn(*leaves) * weight).sum().backward()
    return [t.grad for t in leaves]


@pytest.mark.parametrize("backend", ["reference", "triton"], indirect=True)
def test_matmul_grads_match_torch_autograd(backend):
    a, b = _randn((33, 20), torch.float32, 33), _randn((20, 17), torch.float32, 34)
    weight = _randn((33, 17), torch.float32, 35)  # a non-uniform upstream gradient
    got = _grads(torch.ops.tilekit.matmul, (a, b), weight)
    want = _grads(lambda x, y: x.double() @ y.double(), (a, b), weight.double())
    for g, w in zip(got, want):
        assert_close(g, w, dtype=torch.float32)


@pytest.mark.parametrize("backend", ["reference", "triton"], indirect=True)
def test_softmax_grads_match_torch_autograd(backend):
    x = _randn((2, 3, 129), torch.float32, 36, scale=2.0)
    weight = _randn((2, 3, 129), torch.float32, 37)
    (got,) = _grads(torch.ops.tilekit.softmax, (x,), weight)
    (want,) = _grads(lambda t: torch.softmax(t.double(), -1), (x,), weight.double())
    assert_close(got, want, dtype=torch.float32)


def test_softmax_backward_op_matches_formula_in_half_precision():
    y = torch.softmax(_randn((6, 300), torch.float32, 38), -1).to(torch.float16)
    g = _randn((6, 300), torch.float16, 39)
    expected = tk_ops.softmax_backward_reference(g.double(), y.double())
    assert_close(torch.ops.tilekit.softmax_backward(g, y), expected, dtype=torch.float16)


# ---- torch.library integration ---------------------------------------------------------------------

def test_opcheck_matmul():
    a = _randn((5, 7), torch.float32, 40).requires_grad_()
    b = _randn((7, 3), torch.float32, 41).requires_grad_()
    opcheck(torch.ops.tilekit.matmul.default, (a, b))


def test_opcheck_softmax_and_its_backward():
    x = _randn((4, 33), torch.float32, 42).requires_grad_()
    opcheck(torch.ops.tilekit.softmax.default, (x,))
    y = torch.softmax(_randn((4, 33), torch.float32, 43), -1)
    opcheck(torch.ops.tilekit.softmax_backward.default, (_randn((4, 33), torch.float32, 44), y))


def test_torch_compile_fullgraph_forward_and_backward():
    torch._dynamo.reset()

    def attention_like(q, k):
        return torch.ops.tilekit.softmax(torch.ops.tilekit.matmul(q, k.T) * 0.5)

    compiled = torch.compile(attention_like, fullgraph=True)
    q = _randn((9, 16), torch.float32, 45).requires_grad_()
    k = _randn((11, 16), torch.float32, 46).requires_grad_()
    weight = _randn((9, 11), torch.float32, 47)
    out = compiled(q, k)
    (out * weight).sum().backward()

    q64, k64 = q.detach().double().requires_grad_(), k.detach().double().requires_grad_()
    expected = torch.softmax(q64 @ k64.T * 0.5, -1)
    (expected * weight.double()).sum().backward()
    assert_close(out.detach(), expected.detach(), dtype=torch.float32)
    assert_close(q.grad, q64.grad, dtype=torch.float32)
    assert_close(k.grad, k64.grad, dtype=torch.float32)


# ---- backend and config choice ----------------------------------------------------------------------

class _LaunchSpy:
    """Stands in for a module's kernel: records each launch's backend, then launches the real kernel."""

    def __init__(self, kernel):
        self.kernel, self.backends = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.backends.append(kwargs.get("backend"))
            return self.kernel[grid](*args, **kwargs)
        return launch


@pytest.fixture
def matmul_spy(monkeypatch):
    spy = _LaunchSpy(matmul_module.matmul_kernel)
    monkeypatch.setattr(matmul_module, "matmul_kernel", spy)
    return spy


def _small_matmul():
    return torch.ops.tilekit.matmul(_randn((3, 4), torch.float32, 50), _randn((4, 2), torch.float32, 51))


def test_cpu_tensors_default_to_the_reference_backend(monkeypatch, matmul_spy):
    monkeypatch.delenv(tk_ops.BACKEND_ENV, raising=False)
    _small_matmul()
    assert matmul_spy.backends == ["reference"]


def test_env_var_and_setting_choose_the_backend(monkeypatch, matmul_spy):
    monkeypatch.setenv(tk_ops.BACKEND_ENV, "triton")
    _small_matmul()
    with tk_ops.use_backend("reference"):  # the module setting wins over the environment
        _small_matmul()
    _small_matmul()  # and is restored on exit
    assert matmul_spy.backends == ["triton", "reference", "triton"]


def test_unknown_backend_names_are_rejected(monkeypatch):
    monkeypatch.setenv(tk_ops.BACKEND_ENV, "vulkan")
    with pytest.raises(ValueError, match="vulkan"):
        _small_matmul()
    with pytest.raises(ValueError, match="vulkan"):
        tk_ops.set_backend("vulkan")


def test_cuda_tensors_go_to_triton_and_never_to_reference(monkeypatch):
    monkeypatch.delenv(tk_ops.BACKEND_ENV, raising=False)
    assert tk_ops.backend_for(torch.device("cuda", 0)) == "triton"
    with tk_ops.use_backend("reference"), pytest.raises(ValueError, match="CPU tensors only"):
        tk_ops.backend_for(torch.device("cuda", 0))


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("dtype", REFERENCE_DTYPES + [torch.float64], ids=str)
def test_default_configs_satisfy_the_declared_tunables(device, dtype):
    size = torch.empty((), dtype=dtype).element_size()
    for shape in [(1, 1, 1), (33, 70, 17), (4096, 4096, 4096), (100, 3, 129)]:
        config = matmul_module._config_for(shape, dtype, torch.device(device))
        why = matmul_module.MATMUL_TUNABLES.why_invalid({**config, "elem_bytes": size})
        assert why is None, (shape, config, why)
    for shape in [(1, 1), (7, 1000), (3, 4097), (8192, 131072)]:
        config = softmax_module._config_for(shape, dtype, torch.device(device))
        assert softmax_module.SOFTMAX_TUNABLES.why_invalid(config) is None, (shape, config)


def test_tunables_rules_reject_oversized_configs():
    too_much_shared = {"BM": 256, "BN": 256, "BK": 128, "num_warps": 8, "num_stages": 5}
    assert "shared memory" in matmul_module.MATMUL_TUNABLES.why_invalid(too_much_shared)
    too_many_registers = {"BM": 256, "BN": 256, "BK": 16, "num_warps": 2, "num_stages": 1}
    assert "per thread" in matmul_module.MATMUL_TUNABLES.why_invalid(too_many_registers)
    assert "per thread" in softmax_module.SOFTMAX_TUNABLES.why_invalid({"BM": 64, "BN": 8192, "num_warps": 1})
    # Every declared space keeps valid configs to search.
    assert len(matmul_module.MATMUL_TUNABLES) > 0 and len(softmax_module.SOFTMAX_TUNABLES) > 0


def test_config_provider_configs_are_checked(monkeypatch):
    # An invalid provided config is dropped with one warning and the default runs; strict makes it an error.
    from tilekit.autotune import lookup
    bad = {"BM": 256, "BN": 256, "BK": 16, "num_warps": 2, "num_stages": 1}
    previous = tk_ops.set_config_provider(lambda kid, shape, dtype, device, backend: bad)
    try:
        lookup.reset()
        a, b = torch.randn(5, 7), torch.randn(7, 3)
        with pytest.warns(lookup.TuningWarning, match="invalid"):
            assert_close(torch.ops.tilekit.matmul(a, b), _expected_matmul(a, b), dtype=torch.float32)
        monkeypatch.setenv("TILEKIT_TUNING", "strict")
        lookup.reset()
        with pytest.raises(lookup.TuningError, match="invalid"):
            torch.ops.tilekit.matmul(a, b)
    finally:
        tk_ops.set_config_provider(previous)
        monkeypatch.delenv("TILEKIT_TUNING")
        lookup.reset()


# ---- input validation --------------------------------------------------------------------------------

def _no_launch(monkeypatch):
    """Make any kernel launch fail the test: validation must reject inputs before launching."""
    class Forbidden:
        def __getitem__(self, grid):
            raise AssertionError("a kernel was launched for invalid inputs")
    for module, name in ((matmul_module, "matmul_kernel"), (softmax_module, "softmax_kernel"),
                         (softmax_module, "softmax_backward_kernel")):
        monkeypatch.setattr(module, name, Forbidden())


def test_matmul_shape_mismatch_names_both_shapes(monkeypatch):
    _no_launch(monkeypatch)
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(5, 2\)"):
        torch.ops.tilekit.matmul(torch.ones(3, 4), torch.ones(5, 2))


@pytest.mark.parametrize("a_shape,b_shape", [((3,), (3, 2)), ((2, 3), (1, 3, 2))])
def test_matmul_rejects_wrong_rank(monkeypatch, a_shape, b_shape):
    _no_launch(monkeypatch)
    with pytest.raises(ValueError, match="must be 2-D"):
        torch.ops.tilekit.matmul(torch.ones(a_shape), torch.ones(b_shape))


def test_matmul_rejects_unsupported_and_mixed_dtypes(monkeypatch):
    _no_launch(monkeypatch)
    with pytest.raises(TypeError, match="int32"):
        torch.ops.tilekit.matmul(torch.ones(2, 2, dtype=torch.int32), torch.ones(2, 2, dtype=torch.int32))
    with pytest.raises(TypeError, match="different dtypes"):
        torch.ops.tilekit.matmul(torch.ones(2, 2), torch.ones(2, 2, dtype=torch.float16))


def test_matmul_rejects_tensors_on_different_devices(monkeypatch):
    _no_launch(monkeypatch)
    with pytest.raises(ValueError, match="different devices"):
        torch.ops.tilekit.matmul(torch.ones(2, 2, device="meta"), torch.ones(2, 2))


def test_softmax_rejects_bad_inputs(monkeypatch):
    _no_launch(monkeypatch)
    with pytest.raises(ValueError, match="at least 1 dimension"):
        torch.ops.tilekit.softmax(torch.tensor(1.0))
    with pytest.raises(TypeError, match="int64"):
        torch.ops.tilekit.softmax(torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        torch.ops.tilekit.softmax_backward(torch.ones(2, 3), torch.ones(3, 2))


def test_fake_tensors_give_shapes_without_running_kernels(monkeypatch):
    _no_launch(monkeypatch)
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        c = torch.ops.tilekit.matmul(torch.empty(8, 5, dtype=torch.float16), torch.empty(5, 3, dtype=torch.float16))
        y = torch.ops.tilekit.softmax(torch.empty(2, 3, 4, dtype=torch.bfloat16))
    assert c.shape == (8, 3) and c.dtype == torch.float16
    assert y.shape == (2, 3, 4) and y.dtype == torch.bfloat16
