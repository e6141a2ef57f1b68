"""Constructs outside the kernel language give a ``tilekit.CompileError`` that names this file and the
line of the offending statement.

Every bad line below carries the marker comment ``# <- error``; ``marked_line`` finds it with
``inspect``, so the expected line numbers never drift when this file is edited.
"""
import inspect
import math

import pytest
import torch

import tilekit as tk

MARK = "# <- error"
HERE = __file__


def marked_line(obj):
    """The file line number of the single line of ``obj``'s source that carries MARK."""
    fn = getattr(obj, "fn", obj)
    lines, start = inspect.getsourcelines(fn)
    hits = [start + i for i, line in enumerate(lines) if MARK in line]
    assert len(hits) == 1, f"{fn.__name__} must mark exactly one line"
    return hits[0]


def compile_error(kernel, *args, **kwargs):
    """Compile ``kernel`` for ``args``; return the CompileError it must raise."""
    with pytest.raises(tk.CompileError) as info:
        kernel.ir(*args, **kwargs)
    return info.value


def assert_points_at(err, obj, *fragments):
    assert err.filename == HERE, err
    assert err.lineno == marked_line(obj), f"expected line {marked_line(obj)}, got {err.lineno}: {err}"
    assert MARK in (err.source_line or ""), err.source_line
    text = str(err)
    for f in fragments:
        assert f in text, f"{f!r} not in: {text}"


X = torch.randn(40, 40)
XI = torch.zeros(40, 40, dtype=torch.int32)


def not_a_tk_func(x):
    return x * 2


@tk.func
def helper_with_bad_line(x):
    y = x + 1
    while y:  # <- error
        y = y
    return y


# ---- statements ---------------------------------------------------------------------------------------

@tk.kernel
def k_while(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    while True:  # <- error
        pass
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_try(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    try:  # <- error
        x = x + 1
    except Exception:
        pass
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_break(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    for i in tk.range(0, 4):
        break  # <- error
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_continue(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    for i in tk.range(0, 4):
        continue  # <- error
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_item_assign(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    x[0] = 1  # <- error
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_aug_item_assign(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    x[0] += 1  # <- error
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_with(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    with open("f"):  # <- error
        pass
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_raise(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    raise ValueError("no")  # <- error


@tk.kernel
def k_del(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    del x  # <- error


@tk.kernel
def k_import(X, Y):
    import os  # <- error
    tk.store(Y, (0, 0), tk.load(X, (0, 0), (16, 16)))


@tk.kernel
def k_nested_def(X, Y):
    def inner(a):  # <- error
        return a
    tk.store(Y, (0, 0), tk.load(X, (0, 0), (16, 16)))


@tk.kernel
def k_global(X, Y):
    global GLOBAL_COUNTER  # <- error
    tk.store(Y, (0, 0), tk.load(X, (0, 0), (16, 16)))


@tk.kernel
def k_for_else(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    for i in tk.range(0, 4):  # <- error
        x = x + 1
    else:
        pass
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_for_list(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    for i in [1, 2, 3]:  # <- error
        x = x + i
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_return_value(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    return x  # <- error


@tk.kernel
def k_return_in_loop(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    for i in tk.range(0, 4):  # <- error
        return
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_runtime_assert(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    assert tk.program_id(0) == 0  # <- error
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_static_assert_fails(X, Y, BLOCK: tk.constexpr = 16):
    x = tk.load(X, (0, 0), (BLOCK, BLOCK))
    tk.static_assert(BLOCK > 16, "BLOCK must exceed 16")  # <- error
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_runtime_stages(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    for i in tk.range(0, 4, stages=X.shape[0]):  # <- error
        x = x + 1
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_warp_specialize_not_bool(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    for i in tk.range(0, 4, warp_specialize=1):  # <- error
        x = x + 1
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_discard_read_after_loop(X, Y):
    _ = tk.load(X, (0, 0), (16, 16))
    for i in tk.range(0, 4):
        _ = tk.load(X, (0, 0), (16, 32))
    tk.store(Y, (0, 0), _)  # <- error


@tk.kernel
def k_zero_step(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    for i in tk.range(0, 4, 0):  # <- error
        x = x + 1
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_float_range(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    s = tk.sum(tk.sum(x, axis=1), axis=0)
    for i in tk.range(0, s):  # <- error
        x = x + 1
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_unpack_count(X, Y):
    M, N, K = X.shape  # <- error
    tk.store(Y, (0, 0), tk.load(X, (0, 0), (16, 16)))


# ---- tiles: shapes and types -----------------------------------------------------------------------------

@tk.kernel
def k_runtime_tile_shape(X, Y):
    M, N = X.shape
    x = tk.zeros((M, 16), tk.float32)  # <- error
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_non_pow2_shape(X, Y):
    x = tk.load(X, (0, 0), (24, 16))  # <- error
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_non_pow2_arange(X, Y):
    i = tk.arange(12)  # <- error
    tk.store(Y, (0, 0), tk.load(X, (0, 0), (16, 16)))


@tk.kernel
def k_mma_mismatch(X, Y):
    a = tk.load(X, (0, 0), (16, 32))
    b = tk.load(X, (0, 0), (16, 16))
    acc = tk.zeros((16, 16), tk.float32)
    acc = tk.mma(a, b, acc)  # <- error
    tk.store(Y, (0, 0), acc)


@tk.kernel
def k_mma_acc_dtype(X, Y):
    a = tk.load(X, (0, 0), (16, 16))
    acc = tk.zeros((16, 16), tk.float16)
    acc = tk.mma(a, a, acc)  # <- error
    tk.store(Y, (0, 0), acc)


@tk.kernel
def k_matmul_operator_mismatch(X, Y):
    a = tk.load(X, (0, 0), (16, 32))
    c = a @ a  # <- error
    tk.store(Y, (0, 0), c)


@tk.kernel
def k_store_float_into_int(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    tk.store(Y, (0, 0), x)  # <- error


@tk.kernel
def k_store_into_packed(X, P):
    x = tk.load(X, (0, 0), (16, 16))
    tk.store(P, (0, 0), x)  # <- error


@tk.kernel
def k_atomic_into_int8(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    tk.atomic_add(Y, (0, 0), x)  # <- error


@tk.kernel
def k_arith_on_packed(P, Y):
    w = tk.load(P, (0, 0), (16, 32))
    tk.store(Y, (0, 0), w * 2)  # <- error


@tk.kernel
def k_plain_python_fn(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    y = not_a_tk_func(x)  # <- error
    tk.store(Y, (0, 0), y)


@tk.kernel
def k_math_on_tile(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    y = math.exp(x)  # <- error
    tk.store(Y, (0, 0), y)


@tk.kernel
def k_undefined(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    y = x + undefined_name_xyz  # noqa: F821  # <- error
    tk.store(Y, (0, 0), y)


@tk.kernel
def k_loop_changes_shape(X, Y):
    acc = tk.zeros((16,), tk.float32)
    for k in tk.range(0, 4):  # <- error
        acc = acc[:, None] + tk.load(X, (0, 0), (16, 16))
    tk.store(Y, (0, 0), acc)


@tk.kernel
def k_if_on_tile(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    if x > 0:  # <- error
        x = x + 1
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_if_branches_disagree(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    if tk.program_id(0) == 0:  # <- error
        x = tk.zeros((32, 32), tk.float32)
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_loop_local_used_after(X, Y):
    for k in tk.range(0, 4):
        t = tk.load(X, (0, k), (16, 16))
    tk.store(Y, (0, 0), t)  # <- error


@tk.kernel
def k_if_one_branch_used_after(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    if tk.program_id(0) == 0:
        only_here = x + 1
    tk.store(Y, (0, 0), only_here)  # <- error


@tk.kernel
def k_tuple_rebound_in_loop(X, Y):
    pair = (tk.zeros((16,), tk.float32), tk.zeros((16,), tk.float32))
    for k in tk.range(0, 3):  # <- error
        pair = (pair[0] + 1, pair[1] + 2)
    tk.store(Y, (0, 0), (pair[0] + pair[1])[:, None])


@tk.kernel
def k_none_rebound_in_loop(X, Y):
    acc = None
    for k in tk.range(0, 3):  # <- error
        x = tk.load(X, (0, k * 16), (16, 16))
        acc = x if acc is None else acc + x
    tk.store(Y, (0, 0), acc)


@tk.kernel
def k_lambda(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    f = lambda v: v + 1  # noqa: E731  # <- error
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_list_comprehension(X, Y):
    xs = [tk.load(X, (0, 16 * i), (16, 16)) for i in range(2)]  # <- error
    tk.store(Y, (0, 0), xs[0])


@tk.kernel
def k_generator(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    s = sum(v for v in (1, 2))  # <- error
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_dict_literal(X, Y):
    d = {"a": 1}  # <- error
    tk.store(Y, (0, 0), tk.load(X, (0, 0), (16, 16)))


@tk.kernel
def k_walrus(X, Y):
    if (n := 3) > 2:  # <- error
        pass
    tk.store(Y, (0, 0), tk.load(X, (0, 0), (16, 16)))


@tk.kernel
def k_pow_on_tile(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    tk.store(Y, (0, 0), x ** 2)  # <- error


@tk.kernel
def k_index_tensor(X, Y):
    v = X[0]  # <- error
    tk.store(Y, (0, 0), tk.load(X, (0, 0), (16, 16)))


@tk.kernel
def k_index_tile(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    tk.store(Y, (0, 0), x[tk.program_id(0)])  # <- error


@tk.kernel
def k_bad_attr(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    tk.store(Y, (0, 0), x.sum())  # <- error


@tk.kernel
def k_bitwise_on_float(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    tk.store(Y, (0, 0), x & 1)  # <- error


@tk.kernel
def k_broadcast_mismatch(X, Y):
    a = tk.load(X, (0, 0), (16, 16))
    b = tk.load(X, (0, 0), (16, 32))
    tk.store(Y, (0, 0), a + b)  # <- error


@tk.kernel
def k_load_rank(X, Y):
    x = tk.load(X, (0, 0), (16,))  # <- error
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_program_id_axis(X, Y):
    p = tk.program_id(3)  # <- error
    tk.store(Y, (0, 0), tk.load(X, (0, 0), (16, 16)))


@tk.kernel
def k_call_kernel(X, Y):
    k_while[(1,)](X, Y)  # <- error


@tk.kernel
def k_runtime_other(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    y = tk.load(X, (0, 0), (16, 16), other=x)  # <- error
    tk.store(Y, (0, 0), y)


@tk.kernel
def k_reduce_runtime_axis(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    s = tk.sum(x, axis=tk.program_id(0))  # <- error
    tk.store(Y, (0, 0), x)


@tk.kernel
def k_bad_tk_args(X, Y):
    x = tk.exp(1.0, 2.0, 3.0)  # <- error
    tk.store(Y, (0, 0), tk.load(X, (0, 0), (16, 16)))


@tk.kernel
def k_error_in_func(X, Y):
    x = tk.load(X, (0, 0), (16, 16))
    tk.store(Y, (0, 0), helper_with_bad_line(x))


P = tk.pack(torch.randint(-4, 4, (40, 40)), tk.int3)
Y8 = torch.zeros(40, 40, dtype=torch.int8)

CASES = [
    # kernel, args, message fragments
    (k_while, (X, X), ["while loops are not supported"]),
    (k_try, (X, X), ["try/except"]),
    (k_break, (X, X), ["break"]),
    (k_continue, (X, X), ["continue"]),
    (k_item_assign, (X, X), ["item assignment"]),
    (k_aug_item_assign, (X, X), ["augmented assignment"]),
    (k_with, (X, X), ["with"]),
    (k_raise, (X, X), ["raise"]),
    (k_del, (X, X), ["del"]),
    (k_import, (X, X), ["import"]),
    (k_nested_def, (X, X), ["nested function"]),
    (k_global, (X, X), ["global"]),
    (k_for_else, (X, X), ["for/else"]),
    (k_for_list, (X, X), ["tk.range"]),
    (k_return_value, (X, X), ["cannot return a value"]),
    (k_return_in_loop, (X, X), ["return inside a loop"]),
    (k_runtime_assert, (X, X), ["compile-time value"]),
    (k_static_assert_fails, (X, X), ["BLOCK must exceed 16"]),
    (k_zero_step, (X, X), ["step must be positive"]),
    (k_discard_read_after_loop, (X, X), ["'_'", "another type", "another name"]),
    (k_runtime_stages, (X, X), ["stages=", "compile-time int"]),
    (k_warp_specialize_not_bool, (X, X), ["warp_specialize=", "True or False"]),
    (k_float_range, (X, X), ["integer scalars"]),
    (k_unpack_count, (X, X), ["cannot unpack"]),
    (k_runtime_tile_shape, (X, X), ["not compile-time"]),
    (k_non_pow2_shape, (X, X), ["24", "power of two"]),
    (k_non_pow2_arange, (X, X), ["12", "power of two"]),
    (k_mma_mismatch, (X, X), ["tk.mma shape mismatch", "(16, 32)", "(16, 16)"]),
    (k_mma_acc_dtype, (X, X), ["accumulates in"]),
    (k_matmul_operator_mismatch, (X, X), ["shape mismatch"]),
    (k_store_float_into_int, (X, XI), [".to(tk.int32)"]),
    (k_store_into_packed, (X, P), ["packed"]),
    (k_atomic_into_int8, (XI, Y8), ["atomic_add"]),
    (k_arith_on_packed, (P, X), ["sub-byte"]),
    (k_plain_python_fn, (X, X), ["not_a_tk_func", "@tk.func"]),
    (k_math_on_tile, (X, X), ["exp", "@tk.func"]),
    (k_undefined, (X, X), ["undefined_name_xyz"]),
    (k_loop_changes_shape, (X, X), ["'acc'", "changes type"]),
    (k_if_on_tile, (X, X), ["`if` on a", "tk.where"]),
    (k_if_branches_disagree, (X, X), ["'x'", "both branches"]),
    (k_loop_local_used_after, (X, X), ["'t'", "inside a tk.range loop"]),
    (k_if_one_branch_used_after, (X, X), ["'only_here'", "only one branch"]),
    (k_tuple_rebound_in_loop, (X, X), ["'pair'", "loop-carried", "tuple"]),
    (k_none_rebound_in_loop, (X, X), ["'acc'", "loop-carried", "None"]),
    (k_lambda, (X, X), ["Lambda"]),
    (k_list_comprehension, (X, X), ["ListComp"]),
    (k_generator, (X, X), ["GeneratorExp"]),
    (k_dict_literal, (X, X), ["Dict"]),
    (k_walrus, (X, X), ["NamedExpr"]),
    (k_pow_on_tile, (X, X), ["**"]),
    (k_index_tensor, (X, X), ["tk.load"]),
    (k_index_tile, (X, X), ["compile-time int", "tk.where"]),
    (k_bad_attr, (X, X), [".sum"]),
    (k_bitwise_on_float, (X, X), ["bitwise"]),
    (k_broadcast_mismatch, (X, X), ["cannot broadcast"]),
    (k_load_rank, (X, X), ["2-d shape"]),
    (k_program_id_axis, (X, X), ["axis must be 0, 1 or 2"]),
    (k_call_kernel, (X, X), ["@tk.func"]),
    (k_runtime_other, (X, X), ["other="]),
    (k_reduce_runtime_axis, (X, X), ["axis must be a compile-time int"]),
    (k_bad_tk_args, (X, X), ["tk.exp"]),
]


@pytest.mark.parametrize("kernel,args,fragments", CASES, ids=[c[0].__name__ for c in CASES])
def test_compile_error_points_at_the_line(kernel, args, fragments):
    err = compile_error(kernel, *args)
    assert_points_at(err, kernel, *fragments)


def test_error_inside_a_func_points_at_the_func_line():
    err = compile_error(k_error_in_func, X, X)
    assert_points_at(err, helper_with_bad_line, "while loops")


def test_compile_error_is_also_raised_by_a_launch():
    """The launch path reports the same error as kernel.ir()."""
    for backend in ("reference", "triton"):
        with pytest.raises(tk.CompileError) as info:
            k_if_on_tile[(1,)](X, X, backend=backend)
        assert_points_at(info.value, k_if_on_tile, "`if` on a")


def test_compile_error_message_shows_file_line_and_source():
    err = compile_error(k_non_pow2_shape, X, X)
    first, second = str(err).splitlines()[:2]
    assert first.startswith(f"{HERE}:{marked_line(k_non_pow2_shape)}: ")
    assert second.strip() == "x = tk.load(X, (0, 0), (24, 16))  # <- error"


def test_varargs_kernel_is_rejected_at_its_def_line():
    with pytest.raises(tk.CompileError) as info:
        @tk.kernel
        def k_varargs(X, *rest):  # <- error
            pass
    err = info.value
    lines, start = inspect.getsourcelines(test_varargs_kernel_is_rejected_at_its_def_line)
    want = start + next(i for i, line in enumerate(lines) if "def k_varargs" in line)
    assert (err.filename, err.lineno) == (HERE, want), err
    assert "*args" in str(err)


def test_reserved_parameter_name():
    with pytest.raises(tk.CompileError, match="reserved"):
        @tk.kernel
        def k_reserved(X, backend):
            pass


def test_kernel_defined_without_source():
    ns = {}
    exec("import tilekit as tk\n@tk.kernel\ndef k(X):\n    pass\n", ns)
    with pytest.raises(tk.CompileError, match="source"):
        ns["k"].ir(X)
