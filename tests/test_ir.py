"""Tile IR: a readable, stable text form; a verifier that rejects broken functions; constant folding;
dead-code elimination; type re-inference."""
import copy
import inspect
import re

import pytest
import torch

import tilekit as tk
from tilekit.examples import matmul
from tilekit import dtypes as D
from tilekit.frontend import build_function
from tilekit.ir import TensorType, TileType, Value, format_function, walk
from tilekit.passes import eliminate_dead_code, fold_constants, infer_shapes, run_pipeline, verify


def mm_args(dtype=torch.float16):
    return (torch.empty(100, 70, dtype=dtype), torch.empty(70, 90, dtype=dtype), torch.empty(100, 90, dtype=dtype))


def raw(kernel, specs, **constexprs):
    """The front end's function before any pass."""
    return build_function(kernel, specs, constexprs)


MM_SPECS = {n: TensorType(D.float16, 2) for n in "ABC"}


def op_names(fn):
    return [op.name for op in walk(fn.body)]


def source_line(kernel, text):
    lines, start = inspect.getsourcelines(kernel.fn)
    return start + next(i for i, line in enumerate(lines) if text in line)


# ---- text form ----------------------------------------------------------------------------------------------

def test_text_form_is_readable():
    text = matmul.ir(*mm_args(), BM=64, BN=32)
    first = text.splitlines()[0]
    assert first == ("func @matmul(%0 A: tensor<2d x fp16>, %1 B: tensor<2d x fp16>, %2 C: tensor<2d x fp16>)"
                     "  constexpr[BM=64, BN=32, BK=32] {")
    assert text.rstrip().endswith("}")
    assert re.search(r"= for\(.*\) \{stages=None\} : tile<64x32xfp32>", text)
    assert re.search(r"\^region0\(%\d+: i32, %\d+: tile<64x32xfp32>\):", text)  # induction var + carried acc
    assert re.search(r"= mma\(%\d+, %\d+, %\d+\) \{allow_tf32=False\} : tile<64x32xfp32>", text)
    assert re.search(r"= load\(%0, .*\) \{shape=\(64, 32\), has_mask=False\} : tile<64x32xfp16>", text)
    assert re.search(r"= cast\(%\d+\) \{dtype=tk.float16\} : tile<64x32xfp16>", text)
    assert re.search(r"^\s+store\(%2, ", text, re.M)
    mma_line = next(line for line in text.splitlines() if "= mma(" in line)
    assert mma_line.endswith(f"# line {source_line(matmul, 'acc = tk.mma(a, b, acc)')}")


def test_text_form_is_stable():
    """Value numbering is per function, so the same kernel prints the same text every time."""
    a = matmul.ir(*mm_args())
    matmul.ir(*mm_args(torch.float32))  # other compiles in between must not shift the numbering
    b = matmul.ir(*mm_args())
    assert a == b
    assert format_function(run_pipeline(raw(matmul, MM_SPECS, BM=64, BN=64, BK=32))) == a


def test_types_print_compactly():
    assert str(TileType((64, 32), D.float16)) == "tile<64x32xfp16>"
    assert str(TileType((), D.int32)) == "i32"
    assert str(TensorType(D.bfloat16, 3)) == "tensor<3d x bf16>"
    assert str(TensorType(D.by_name("int3"), 2, packed=True)) == "tensor<2d x i3, packed>"


# ---- verifier -----------------------------------------------------------------------------------------------

def good_fn():
    return run_pipeline(raw(matmul, MM_SPECS, BM=64, BN=64, BK=32))


def the(fn, name):
    return next(op for op in walk(fn.body) if op.name == name)


def test_verifier_accepts_what_the_front_end_builds():
    verify(good_fn())


def test_verifier_rejects_a_wrong_result_type():
    fn = good_fn()
    op = the(fn, "mma")
    op.results[0].type = TileType((64, 64), D.float16)
    with pytest.raises(tk.CompileError, match="IR verification failed at mma: result types"):
        verify(fn)


def test_verifier_rejects_use_before_definition():
    fn = good_fn()
    ops = fn.body.ops
    i = next(i for i, op in enumerate(ops) if op.name == "store")
    ops.insert(0, ops.pop(i))  # the store now comes before the loop that makes its value
    with pytest.raises(tk.CompileError, match="used before it is defined"):
        verify(fn)


def test_verifier_rejects_a_value_escaping_its_region():
    fn = good_fn()
    inner = the(fn, "mma").results[0]
    store = the(fn, "store")
    store.operands[-1] = inner  # the loop body's value, used outside the loop
    with pytest.raises(tk.CompileError, match="outside its region"):
        verify(fn)


def test_verifier_rejects_a_region_without_yield():
    fn = good_fn()
    body = the(fn, "for").regions[0]
    body.ops.pop()  # drop the yield
    with pytest.raises(tk.CompileError, match="does not end in yield"):
        verify(fn)


def test_verifier_rejects_a_yield_of_the_wrong_type():
    fn = good_fn()
    body = the(fn, "for").regions[0]
    a = next(op for op in body.ops if op.name == "load").results[0]
    body.ops[-1].operands = [a]  # yields a fp16 64x32 tile for a fp32 64x64 carried value
    with pytest.raises(tk.CompileError, match="yields"):
        verify(fn)


def test_verifier_rejects_an_ill_typed_op():
    fn = good_fn()
    op = the(fn, "mma")
    a, b, acc = op.operands
    op.operands = [b, a, acc]  # (32x64) @ (64x32): inner dims no longer agree with acc
    with pytest.raises(tk.CompileError, match="IR verification failed at mma"):
        verify(fn)


@pytest.mark.parametrize("name, kind, attr", [("unary", "op", "no_such_unary"), ("binary", "op", "no_such_binary"),
                                              ("cmp", "op", "no_such_cmp"), ("reduce", "kind", "no_such_reduction")])
def test_verifier_rejects_a_kind_not_in_the_op_table(name, kind, attr):
    # regression: unary{op="erf"} used to pass verification and then fail three different ways in the backends
    fn = run_pipeline(raw(k_every_table_kind, {"X": TensorType(D.float32, 1), "Y": TensorType(D.float32, 1)}))
    the(fn, name).attrs[kind] = attr
    with pytest.raises(tk.CompileError, match=f"IR verification failed at {name}: unknown .*'{attr}'"):
        verify(fn)


def test_verifier_rejects_an_op_not_in_the_op_table():
    fn = good_fn()
    the(fn, "mma").name = "mma_sparse"
    with pytest.raises(tk.CompileError, match="IR verification failed at mma_sparse: not an op of tilekit's op table"):
        verify(fn)


@tk.kernel
def k_every_table_kind(X, Y):
    x = tk.load(X, (0,), (16,))
    y = tk.exp(x) + x
    tk.store(Y, (0,), tk.where(y > 0, y, 0.0) + tk.sum(y, 0))


# ---- passes -------------------------------------------------------------------------------------------------

@tk.kernel
def foldable(X, Y, B: tk.constexpr = 16):
    x = tk.load(X, (0,), (B,))
    c = tk.sqrt(4.0) * 3 + B          # runtime ops on constants: sqrt, mul, add -> 22.0
    n = (tk.exp(0.0) + 1).to(tk.int32)  # -> 2
    unused = tk.exp(x) * 2            # noqa: F841  dead
    for i in tk.range(0, 4):
        dead_loop_value = x + i       # noqa: F841  a loop with no effects and no used results
    if tk.exp(0.0) > 0.5:             # a runtime `if` on a condition that folds to True
        x = x + c
    tk.store(Y, (0,), x * n)


SPECS_1D = {"X": TensorType(D.float32, 1), "Y": TensorType(D.float32, 1)}


def test_constant_folding_folds_constexpr_arithmetic():
    before = raw(foldable, SPECS_1D, B=16)
    assert "if" in op_names(before) and "unary" in op_names(before)
    fn = fold_constants(copy.deepcopy(before))
    consts = [op.attrs["value"] for op in walk(fn.body) if op.name == "const"]
    assert 22.0 in consts and 2 in consts
    assert "if" not in op_names(fn)  # the taken branch was spliced in
    assert not any(op.name == "unary" and op.attrs["op"] == "sqrt" for op in walk(fn.body))
    verify(fn)


def test_dead_code_elimination_removes_unused_ops():
    fn = eliminate_dead_code(fold_constants(raw(foldable, SPECS_1D, B=16)))
    names = op_names(fn)
    assert "for" not in names
    assert not any(op.name == "unary" for op in walk(fn.body))  # the unused exp(x) and the folded ones
    assert names.count("load") == 1 and names.count("store") == 1
    verify(fn)


def test_dead_code_elimination_keeps_effects():
    @tk.kernel
    def effects(X, Y):
        for i in tk.range(0, 2):
            tk.store(Y, (i * 16,), tk.load(X, (i * 16,), (16,)))  # a loop whose only result is a store
        if tk.program_id(0) == 0:
            tk.atomic_add(Y, (0,), tk.full((16,), 1.0, tk.float32))

    fn = run_pipeline(raw(effects, SPECS_1D))
    names = op_names(fn)
    assert "for" in names and "if" in names and "store" in names and "atomic_rmw" in names


def test_pipeline_result_runs_correctly():
    X = torch.randn(16)
    Y = torch.full((16,), float("nan"))
    foldable[(1,)](X, Y, backend="reference")
    assert torch.allclose(Y, (X + 22.0) * 2)


def test_infer_restores_types_and_verify_accepts():
    fn = good_fn()
    op = the(fn, "mma")
    op.results[0].type = TileType((1, 1), D.int8)
    infer_shapes(fn)
    assert op.results[0].type == TileType((64, 64), D.float32)
    verify(fn)


def test_values_know_their_defining_op():
    fn = good_fn()
    for op in walk(fn.body):
        for r in op.results:
            assert isinstance(r, Value) and r.owner is op


def test_every_op_of_the_table_has_a_reference_handler_and_both_emitters():
    from tilekit import optable, reference
    from tilekit.backends.cstyle import CEmitter
    from tilekit.backends.triton.lower import TritonEmitter
    from tilekit.optable import Trait

    for name in optable.IR_OPS:
        if optable.has(name, Trait.TERMINATOR):
            continue
        assert name in reference._HANDLERS, name
        assert hasattr(CEmitter, f"op_{name}") or optable.has(name, Trait.ELEMENTWISE), name
        assert (hasattr(TritonEmitter, f"e_{name}") or optable.has(name, Trait.WRITES_MEMORY | Trait.REGION)
                and name != "scan"), name
    for kind, entry in optable.UNARY.items():
        assert entry.builtin == hasattr(tk, kind), kind
        if entry.float_only:
            assert entry.numpy and entry.triton and entry.c, kind
