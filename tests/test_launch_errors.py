"""Launching a kernel wrongly fails before anything runs, with the Python exception type a caller expects
and a message that says what was wrong."""
import pytest
import torch

import tilekit as tk


@tk.kernel
def scale(X, Y, s, B: tk.constexpr = 16):
    p = tk.program_id(0)
    tk.store(Y, (p * B,), tk.load(X, (p * B,), (B,)) * s)


def tensors(n=40):
    X = torch.randn(n)
    return X, torch.full((n,), float("nan"))


def test_a_correct_launch_works():
    """The baseline every error below departs from."""
    X, Y = tensors()
    scale[(3,)](X, Y, 2.0)
    assert torch.equal(Y, 2 * X)


@pytest.mark.parametrize("args", [(), (1,), (1, 2), (1, 2, 3, 4, 5)], ids=["0", "1", "2", "5"])
def test_wrong_number_of_arguments(args):
    X, Y = tensors()
    real = (X, Y, 2.0, 16, "extra")
    call = tuple(real[i] for i in range(len(args)))
    with pytest.raises(TypeError, match=r"missing argument|takes 4 arguments"):
        scale[(3,)](*call)


def test_missing_argument_is_named():
    X, Y = tensors()
    with pytest.raises(TypeError, match=r"missing argument\(s\): s"):
        scale[(3,)](X, Y)


def test_argument_given_twice():
    X, Y = tensors()
    with pytest.raises(TypeError, match="multiple values for argument 'X'"):
        scale[(3,)](X, Y, 1.0, X=X)


@pytest.mark.parametrize("bad", [3.0, 7, True, [1.0, 2.0]], ids=["float", "int", "bool", "list"])
def test_non_tensor_where_a_tensor_is_needed(bad):
    X, _ = tensors()
    with pytest.raises(TypeError, match="'Y'"):
        scale[(3,)](X, bad, 2.0)


def test_numpy_array_is_not_a_tensor():
    X, Y = tensors()
    with pytest.raises(TypeError, match="ndarray"):
        scale[(3,)](X.numpy(), Y, 2.0)


@pytest.mark.parametrize("bad", [torch.randn(40), torch.tensor(2.0)], ids=["1d", "0d"])
def test_tensor_where_a_scalar_is_expected(bad):
    X, Y = tensors()
    with pytest.raises(TypeError, match="'s' is a tensor, but the kernel uses it as a scalar"):
        scale[(3,)](X, Y, bad)


@pytest.mark.parametrize("bad", ["2", None, object()], ids=["str", "None", "object"])
def test_unsupported_scalar_types(bad):
    X, Y = tensors()
    with pytest.raises(TypeError, match="'s'"):
        scale[(3,)](X, Y, bad)


def test_unsupported_tensor_dtype():
    X, Y = tensors()
    with pytest.raises(TypeError, match="complex64"):
        scale[(3,)](X.to(torch.complex64), Y, 2.0)


@pytest.mark.parametrize("backend", [None, "reference", "triton"])
def test_tensors_on_different_devices(backend):
    X, Y = tensors()
    opts = {} if backend is None else {"backend": backend}
    with pytest.raises(ValueError, match="different devices"):
        scale[(3,)](X.to("meta"), Y, 2.0, **opts)
    assert torch.isnan(Y).all()  # nothing ran


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_cpu_backends_refuse_other_devices(backend):
    X, Y = tensors()
    with pytest.raises(ValueError, match="CPU tensors"):
        scale[(3,)](X.to("meta"), Y.to("meta"), 2.0, backend=backend)


@pytest.mark.parametrize("kw", ["foo", "Z", "num_programs"])
def test_unknown_keyword_argument(kw):
    X, Y = tensors()
    with pytest.raises(TypeError, match=f"unexpected argument '{kw}'"):
        scale[(3,)](X, Y, 2.0, **{kw: 1})


@pytest.mark.parametrize("grid", [(-1,), (1, 1, 1, 1), (), (1.5,), ("a",), (2, -3), lambda meta: (meta["B"], -2),
                                  None, 2.0, "3", lambda meta: None],
                         ids=["negative", "4d", "empty", "float", "str", "negative-2d", "callable", "None",
                              "float-scalar", "str-scalar", "callable-None"])
def test_bad_grid(grid):
    X, Y = tensors()
    with pytest.raises(ValueError, match="grid"):
        scale[grid](X, Y, 2.0)
    assert torch.isnan(Y).all()


@pytest.mark.parametrize("grid", [3, [3], (3, 1), [3, 1, 1], lambda meta: [3]], ids=["int", "list", "2d", "list-3d", "callable-list"])
def test_grid_forms(grid):
    X, Y = tensors()
    scale[grid](X, Y, 2.0)
    assert torch.equal(Y, 2 * X)


def test_empty_grid_runs_nothing():
    X, Y = tensors()
    scale[(0,)](X, Y, 2.0)
    scale[lambda meta: (0, 4)](X, Y, 2.0)
    assert torch.isnan(Y).all()


def test_grid_callable_sees_constexprs():
    X, Y = tensors()
    seen = []
    scale[lambda meta: seen.append(dict(meta)) or (tk.cdiv(40, meta["B"]),)](X, Y, 2.0, B=32)
    assert seen and seen[0]["B"] == 32
    assert torch.equal(Y, 2 * X)


@pytest.mark.parametrize("name", ["nope", "Triton", "cuda_typo"])
def test_unknown_backend(name):
    X, Y = tensors()
    with pytest.raises(ValueError, match="unknown backend"):
        scale[(3,)](X, Y, 2.0, backend=name)


def test_calling_a_kernel_without_a_grid():
    X, Y = tensors()
    with pytest.raises(TypeError, match=r"scale\[grid\]"):
        scale(X, Y, 2.0)


def test_unhashable_constexpr():
    X, Y = tensors()
    with pytest.raises(TypeError, match="constexpr 'B' must be hashable"):
        scale[(3,)](X, Y, 2.0, B=[16])


def test_constexpr_that_cannot_be_a_tile_size():
    X, Y = tensors()
    with pytest.raises(tk.CompileError, match="power of two"):
        scale[(3,)](X, Y, 2.0, B=12)


def test_tensor_of_the_wrong_rank():
    X, Y = tensors()
    with pytest.raises(tk.CompileError, match="tk.load of a 2-d tensor needs a 2-d shape"):
        scale[(3,)](X.view(4, 10), Y, 2.0)


def test_host_use_of_device_builtins():
    with pytest.raises(RuntimeError, match="inside a @tk.kernel"):
        tk.load(None, (0,), (16,))
    with pytest.raises(RuntimeError, match="inside a @tk.kernel"):
        tk.exp(1.0)
