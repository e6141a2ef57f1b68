"""The ordinary Python a kernel may use: each construct compiles, has the IR it should, and computes what
PyTorch computes, on the reference executor and on the Triton interpreter."""
import re

import pytest
import torch

import tilekit as tk
from tilekit.optable import ATOMIC_RMW, UNARY as UNARY_TABLE, UNARY_BUILTINS
from conftest import cpu_backends
import tilekit.frontend
from tilekit import tolerances

pytestmark = [  # padding lanes of a ragged tile compute log(0), 1/0: never stored; x * 1e5 overflows fp16 on purpose
    pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]

BACKENDS = cpu_backends(cstyle=False)  # reference and triton, from the backend registry (conftest.py)
backends = pytest.mark.parametrize("backend", BACKENDS)


def ops_in(ir_text):
    """The op names of an IR listing, in order (``%3 = binary(...)`` -> ``binary``)."""
    return re.findall(r"^\s*(?:%[\w, %]+ = )?([a-z_]+)\(", ir_text, flags=re.M)


def rand(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def nan_like(t):
    return torch.full_like(t, float("nan"))


# ---- tuple unpacking, [:, None], operators with scalars -------------------------------------------------

@tk.func
def min_max(x):
    return tk.min(x, axis=1), tk.max(x, axis=1)


@tk.kernel
def k_unpack(X, Y, BM: tk.constexpr = 16, BN: tk.constexpr = 32):
    M, N = X.shape
    pm, pn = tk.program_id(0), tk.program_id(1)
    (r0, c0) = pm * BM, pn * BN
    x = tk.load(X, (r0, c0), (BM, BN))
    lo, hi = min_max(x)
    a, (b, c) = 2.0, (3, 0.5)
    y = (x - lo[:, None]) * a / (hi - lo + c)[:, None] + b - N
    tk.store(Y, (r0, c0), y)


@backends
def test_tuple_unpacking_and_row_broadcast(backend):
    X = rand(21, 45)
    Y = nan_like(X)
    k_unpack[(2, 2)](X, Y, backend=backend)
    x = X.double()
    # min/max per 32-column block of each row (the kernel's tile), other=0 padding included
    blocks = [x[:, :32], torch.nn.functional.pad(x[:, 32:], (0, 19))]
    want = []
    for blk, real in zip(blocks, (x[:, :32], x[:, 32:])):
        mn, mx = blk.min(1).values, blk.max(1).values
        want.append((real - mn[:, None]) * 2.0 / (mx - mn + 0.5)[:, None] + 3 - 45)
    tolerances.assert_close(Y, torch.cat(want, 1))


@tk.kernel
def k_discard_in_nested_loops(X, Y):
    _ = tk.load(X, (0,), (32,))
    acc = tk.zeros((16,), tk.float32)
    for i in tk.range(0, 3):
        _ = tk.load(X, (0,), (16,))   # the discard name, rebound with another shape: loop-local, not carried
        acc = acc + _
        for j in tk.range(0, 2):
            _ = tk.load(X, (16,), (8,))
            acc = acc + tk.sum(_, 0)
    tk.store(Y, (0,), acc)


@backends
def test_a_discard_name_may_take_another_type_in_each_loop(backend):
    X = rand(32)
    Y = nan_like(X[:16])
    k_discard_in_nested_loops[(1,)](X, Y, backend=backend)
    x = X.double()
    tolerances.assert_close(Y, 3 * x[:16] + 6 * x[16:24].sum())


@tk.kernel
def k_outer(R, C, Y, B: tk.constexpr = 32):
    r = tk.load(R, (0,), (B,))
    c = tk.load(C, (0,), (B,))
    tk.store(Y, (0, 0), r[:, None] * c[None, :] + r[:, None] - 1)


@backends
def test_none_indexing_broadcasts(backend):
    r, c = rand(19, seed=1), rand(23, seed=2)
    Y = nan_like(torch.empty(19, 23))
    k_outer[(1,)](r, c, Y, backend=backend)
    tolerances.assert_close(Y, r.double()[:, None] * c.double()[None, :] + r.double()[:, None] - 1)


@tk.kernel
def k_int_ops(X, Y, d, B: tk.constexpr = 64):
    x = tk.load(X, (0,), (B,))
    y = (x // d) * 1000 + (x % d) * 10 + (-x > 3) + (~x & 1) * 7 + (x << 2) - (x >> 1)
    tk.store(Y, (0,), y)


@backends
def test_integer_operators_follow_c_semantics(backend):
    X = torch.arange(-25, 25, dtype=torch.int32)
    Y = torch.full_like(X, -999)
    k_int_ops[(1,)](X, Y, 7, backend=backend)
    x = X.long()
    trunc_div = torch.div(x, 7, rounding_mode="trunc")
    want = trunc_div * 1000 + (x - trunc_div * 7) * 10 + (-x > 3).long() + (~x & 1) * 7 + (x << 2) - (x >> 1)
    assert torch.equal(Y.long(), want)


# ---- .to() and .T -----------------------------------------------------------------------------------------

@tk.kernel
def k_casts(X, I, H, B: tk.constexpr = 64):
    x = tk.load(X, (0,), (B,))
    tk.store(I, (0,), x.to(tk.int32))
    tk.store(H, (0,), x.to(tk.float16).to(tk.float32).to(H.dtype))


@backends
def test_to_truncates_and_rounds(backend):
    X = rand(50, seed=3) * 100
    I = torch.full((50,), -999, dtype=torch.int32)
    H = torch.full((50,), float("nan"), dtype=torch.float16)
    k_casts[(1,)](X, I, H, backend=backend)
    assert torch.equal(I, X.trunc().to(torch.int32))  # C conversion: toward zero
    assert torch.equal(H, X.to(torch.float16))


@tk.kernel
def k_transpose(X, Y, BM: tk.constexpr = 16, BN: tk.constexpr = 32):
    pm, pn = tk.program_id(0), tk.program_id(1)
    x = tk.load(X, (pm * BM, pn * BN), (BM, BN))
    tk.store(Y, (pn * BN, pm * BM), x.T)


@backends
def test_dot_T_transposes(backend):
    X = rand(20, 37, seed=4)
    Y = nan_like(torch.empty(37, 20))
    k_transpose[(2, 2)](X, Y, backend=backend)
    assert torch.equal(Y, X.T)


# ---- if: compile time and run time ------------------------------------------------------------------------

@tk.kernel
def k_const_if(X, Y, MODE: tk.constexpr, B: tk.constexpr = 64):
    x = tk.load(X, (0,), (B,))
    if MODE == "double":
        y = x * 2
    elif MODE == "neg":
        y = -x
    else:
        y = x + 1
    tk.store(Y, (0,), y)


@pytest.mark.parametrize("mode,fn", [("double", lambda x: 2 * x), ("neg", lambda x: -x), ("inc", lambda x: x + 1)])
@backends
def test_if_on_constexpr_resolves_at_compile_time(backend, mode, fn):
    X = rand(40, seed=5)
    Y = nan_like(X)
    ir = k_const_if.ir(X, Y, MODE=mode)
    assert "if" not in ops_in(ir)
    k_const_if[(1,)](X, Y, MODE=mode, backend=backend)
    assert torch.equal(Y, fn(X))


@tk.kernel
def k_runtime_if(X, Y, n, B: tk.constexpr = 64):
    x = tk.load(X, (0,), (B,))
    scale = 1.0
    if n > 10:
        y = x * 3
        scale = 0.5
    elif n == 5:
        y = x - 100
    else:
        y = tk.abs(x)
    tk.store(Y, (0,), y * scale)


@pytest.mark.parametrize("n,fn", [(11, lambda x: x * 1.5), (5, lambda x: x - 100), (0, lambda x: x.abs())])
@backends
def test_if_on_runtime_scalar(backend, n, fn):
    X = rand(40, seed=6)
    Y = nan_like(X)
    assert "if" in ops_in(k_runtime_if.ir(X, Y, n))
    k_runtime_if[(1,)](X, Y, n, backend=backend)
    tolerances.assert_close(Y, fn(X.double()))


@tk.kernel
def k_if_promotes(X, Y, flag, B: tk.constexpr = 16):
    x = tk.load(X, (0,), (B,)).to(tk.int32)
    if flag:
        pass
    else:
        x = x.to(tk.float32) + 0.5
    tk.store(Y, (0,), x.to(tk.float32))


@pytest.mark.parametrize("flag", [0, 1])
@backends
def test_if_branches_with_different_dtypes_promote(backend, flag):
    X = torch.arange(16, dtype=torch.float32)
    Y = nan_like(X)
    k_if_promotes[(1,)](X, Y, flag, backend=backend)
    assert torch.equal(Y, X if flag else X + 0.5)


@tk.kernel
def k_ifexp(X, Y, t, B: tk.constexpr = 64):
    x = tk.load(X, (0,), (B,))
    tk.store(Y, (0,), x if t > 0 else -x)


@pytest.mark.parametrize("t", [1, -1])
@backends
def test_conditional_expression_on_runtime_scalar(backend, t):
    X = rand(30, seed=7)
    Y = nan_like(X)
    k_ifexp[(1,)](X, Y, t, backend=backend)
    assert torch.equal(Y, X if t > 0 else -X)


# ---- @tk.func inlining --------------------------------------------------------------------------------------

@tk.func
def axpy(a, x, y):
    return a * x + y


@tk.func
def twice_axpy(x, y, a=2.0):
    return axpy(a, axpy(a, x, y), y)


@tk.func
def load_row_block(T, r, B):
    return tk.load(T, (r, 0), (1, B))


@tk.kernel
def k_funcs(X, Y, B: tk.constexpr = 64):
    x = load_row_block(X, tk.program_id(0), B)
    tk.store(Y, (tk.program_id(0), 0), twice_axpy(x, 1.0) + axpy(0.5, x, y=x))


@backends
def test_funcs_are_inlined(backend):
    X = rand(3, 50, seed=8)
    Y = nan_like(X)
    ir = k_funcs.ir(X, Y)
    assert "call" not in ir and "axpy" not in ir
    k_funcs[(3,)](X, Y, backend=backend)
    x = X.double()
    tolerances.assert_close(Y, 2 * (2 * x + 1) + 1 + (0.5 * x + x))


# ---- loops --------------------------------------------------------------------------------------------------

@tk.kernel
def k_nested(X, Y, BM: tk.constexpr = 16, BN: tk.constexpr = 16):
    M, N = X.shape
    total = tk.zeros((BN,), tk.float32)
    count = 0
    for i in tk.range(0, M, BM):
        row_acc = tk.zeros((BM,), tk.float32)
        for j in range(0, N, BN):
            x = tk.load(X, (i, j), (BM, BN))
            row_acc = row_acc + tk.sum(x, axis=1)
            total = total + tk.sum(x, axis=0) * 0
            count += 1
        tk.store(Y, (i,), row_acc * count)


@backends
def test_nested_loops_carry_values(backend):
    X = rand(37, 45, seed=9)
    Y = nan_like(torch.empty(37))
    k_nested[(1,)](X, Y, backend=backend)
    ir = k_nested.ir(X, Y)
    assert ops_in(ir).count("for") == 2
    n_col_blocks = 3
    counts = torch.arange(1, 4, dtype=torch.float64).repeat_interleave(16)[:37] * n_col_blocks
    tolerances.assert_close(Y, X.double().sum(1) * counts)


@tk.kernel
def k_static(X, Y, B: tk.constexpr = 16, N: tk.constexpr = 3):
    acc = tk.zeros((B,), tk.float32)
    for i in tk.static_range(N):
        acc = acc + tk.load(X, (i * B,), (B,)) * (i + 1)
    tk.store(Y, (0,), acc)


@backends
def test_static_range_unrolls(backend):
    X = rand(48, seed=10)
    Y = nan_like(torch.empty(16))
    ir = k_static.ir(X, Y)
    assert "for" not in ops_in(ir)
    assert ops_in(ir).count("load") == 3
    k_static[(1,)](X, Y, backend=backend)
    x = X.double().view(3, 16)
    tolerances.assert_close(Y, x[0] + 2 * x[1] + 3 * x[2])


@tk.kernel
def k_carry_from_python(X, Y, B: tk.constexpr = 16):
    N = X.shape[0]
    s = 0
    m = -float("inf")
    for k in tk.range(0, N, B):
        x = tk.load(X, (k,), (B,), other=-float("inf"))
        m = tk.maximum(m, tk.max(x, axis=0))
        s = s + tk.sum(tk.where(x > -float("inf"), x, 0.0), axis=0)
    tk.store(Y, (0,), tk.full((1,), s, tk.float32))
    tk.store(Y, (1,), tk.full((1,), m, tk.float32))


@backends
def test_loop_carried_values_start_as_python_numbers(backend):
    X = rand(45, seed=11)
    Y = nan_like(torch.empty(2))
    k_carry_from_python[(1,)](X, Y, backend=backend)
    tolerances.assert_close(Y, torch.stack([X.double().sum(), X.double().max()]))


@tk.kernel
def k_grid_info(Y, n, B: tk.constexpr = 16):
    p = tk.program_id(0)
    blocks = tk.cdiv(n, B)
    v = tk.zeros((1,), tk.int32) + p * 100 + tk.num_programs(0) * 10 + blocks
    tk.store(Y, (p,), v)


@backends
def test_program_ids_num_programs_cdiv(backend):
    Y = torch.full((5,), -1, dtype=torch.int32)
    k_grid_info[(5,)](Y, 33, backend=backend)
    assert Y.tolist() == [p * 100 + 50 + 3 for p in range(5)]
    assert tk.cdiv(33, 16) == 3 and tk.cdiv(32, 16) == 2  # the same function on the host


# ---- the elementwise vocabulary against PyTorch ---------------------------------------------------------------

def torch_oracle(path):
    fn = torch
    for part in path.split("."):
        fn = getattr(fn, part)
    return fn


def unary_kernel(builtin):
    """A kernel applying one tk.* unary builtin (a closure: the front end resolves ``OP`` there)."""
    OP = builtin

    @tk.kernel
    def k_unary(X, Y, B: tk.constexpr = 64):
        tk.store(Y, (0,), OP(tk.load(X, (0,), (B,))))
    return k_unary


# Every unary builtin of the op table, each against its independent torch oracle.
UNARY = {name: (unary_kernel(getattr(tk, name)), torch_oracle(UNARY_TABLE[name].torch), UNARY_TABLE[name].domain)
         for name in UNARY_BUILTINS}


def test_every_unary_builtin_has_a_torch_oracle():
    assert UNARY and all(UNARY_TABLE[n].torch for n in UNARY_BUILTINS)
    assert {"exp", "floor", "softplus", "abs"} <= set(UNARY)


def _opencl_param():
    from tilekit.backends import get_backend
    ok, why = get_backend("opencl").available()
    return pytest.param("opencl", marks=pytest.mark.skipif(not ok, reason=f"OpenCL backend unavailable: {why}"))


# fp64: a float64 operand is computed in float64 (the reference's softplus once went through float32)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=["fp64", "fp32", "fp16"])
@pytest.mark.parametrize("op", sorted(UNARY))
@pytest.mark.parametrize("backend", [*BACKENDS, _opencl_param()])  # opencl: the C emitter's spellings, run
def test_unary_math_matches_torch(backend, op, dtype):
    kern, oracle, domain = UNARY[op]
    x = rand(61, seed=12) * 2.5
    x[:2] = torch.tensor([0.5, -0.5])  # floor/ceil of halves
    if op in ("sigmoid", "tanh", "softplus"):
        x[2:4] = torch.tensor([25.0, -25.0])  # saturation, and softplus's linear branch
    if domain == "positive":
        x = x.abs() + 0.01
    X = x.to(dtype)
    Y = nan_like(X)
    kern[(1,)](X, Y, backend=backend)
    tolerances.assert_close(Y, oracle(X.double()), dtype)


@pytest.mark.parametrize("op", sorted(n for n in UNARY if UNARY_TABLE[n].float_only))
def test_float_only_unary_of_an_int_tile_computes_in_fp32(op):
    # regression: semantic.py kept its own float-only list without floor/ceil, so tk.floor(int tile) failed
    # with an IR-level message while tk.exp(int tile) computed in fp32; now both read optable.FLOAT_ONLY_UNARY
    kern, oracle, domain = UNARY[op]
    x = torch.arange(1, 62, dtype=torch.int32) * (1 if domain == "positive" else -1) + 30
    Y = torch.full((61,), float("nan"))
    kern[(1,)](x, Y, backend="reference")
    tolerances.assert_close(Y, oracle(x.double()), torch.float32)


def atomic_kernel(builtin):
    """A kernel scattering X into Out[Idx] with one tk.atomic_<kind> builtin (duplicate targets collide)."""
    OP = builtin

    @tk.kernel
    def k_atomic(X, Idx, Out, n, B: tk.constexpr = 64):
        valid = tk.arange(B) < n
        OP(Out, (tk.load(Idx, (0,), (B,)),), tk.load(X, (0,), (B,)), mask=valid)
    return k_atomic


ATOMICS = {kind: atomic_kernel(getattr(tk, f"atomic_{kind}")) for kind in ATOMIC_RMW}


@pytest.mark.parametrize("dtype", [torch.float32, torch.int32], ids=["fp32", "i32"])
@pytest.mark.parametrize("kind", sorted(ATOMICS))
@pytest.mark.parametrize("backend", [*BACKENDS, _opencl_param()])
def test_atomic_rmw_matches_torch_scatter_reduce(backend, kind, dtype):
    if not ATOMIC_RMW[kind].dtypes(tk.dtypes.from_torch(dtype)):
        pytest.skip(f"tk.atomic_{kind} does not support {dtype} ({ATOMIC_RMW[kind].supported})")
    g = torch.Generator().manual_seed(7)
    n, m = 53, 9  # ragged: 53 of 64 lanes, 9 targets, so every target is hit several times
    x = torch.randint(-50, 50, (n,), generator=g).to(dtype)  # integer values: float sums are exact in any order
    idx = torch.randint(0, m, (n,), generator=g, dtype=torch.int32)
    out = torch.randint(-20, 20, (m,), generator=g).to(dtype)
    want = out.clone().scatter_reduce_(0, idx.long(), x, reduce=ATOMIC_RMW[kind].torch, include_self=True)
    ATOMICS[kind][(1,)](x, idx, out, n, backend=backend)
    assert torch.equal(out, want), (out, want)


@tk.kernel
def k_binary(X, Z, Y, B: tk.constexpr = 64):
    x = tk.load(X, (0,), (B,))
    z = tk.load(Z, (0,), (B,))
    y = tk.maximum(x, z) * 2 - tk.minimum(x, z) + tk.where(x > z, x / z, z - x) + tk.fma(x, z, 1.0)
    tk.store(Y, (0,), y)


@backends
def test_binary_math_matches_torch(backend):
    x, z = rand(50, seed=13), rand(50, seed=14).abs() + 0.5
    Y = nan_like(x)
    k_binary[(1,)](x, z, Y, backend=backend)
    xd, zd = x.double(), z.double()
    want = torch.maximum(xd, zd) * 2 - torch.minimum(xd, zd) + torch.where(xd > zd, xd / zd, zd - xd) + xd * zd + 1
    tolerances.assert_close(Y, want)


# ---- specialization and the kernel cache ------------------------------------------------------------------------

@tk.kernel
def k_scale(X, Y, s, B: tk.constexpr = 16):
    p = tk.program_id(0)
    tk.store(Y, (p * B,), tk.load(X, (p * B,), (B,)) * s)


def test_constexpr_values_specialize_and_cache(count_builds):
    calls = count_builds
    k_scale._cache.clear()
    X = rand(40, seed=15)
    for B in (16, 32):
        Y = nan_like(X)
        k_scale[(tk.cdiv(40, B),)](X, Y, 2.0, B=B, backend="reference")
        assert torch.equal(Y, X * 2)
    assert calls == [{"B": 16}, {"B": 32}]
    assert len(k_scale._cache) == 2
    for _ in range(3):  # warm: no front-end work, same answers
        Y = nan_like(X)
        k_scale[(3,)](X, Y, 3.0, B=16, backend="reference")
        assert torch.equal(Y, X * 3)
    assert len(calls) == 2
    k_scale[(3,)](X.double(), X.double().clone(), 3.0, B=16, backend="reference")  # a new dtype: a new entry
    assert len(calls) == 3 and len(k_scale._cache) == 3


def test_triton_source_is_available():
    X = rand(40, seed=16)
    src = k_scale.source("triton", X, X.clone(), 2.0)
    assert "import triton.language as tl" in src and "tl.load" in src and "tl.store" in src
    assert "def k_k_scale(" in src
    ir = k_scale.source("reference", X, X.clone(), 2.0)
    assert ir.startswith("func @k_scale(")


# ---- literals take the type of the tile beside them -------------------------------------------------------------

@tk.kernel
def k_literals(X, Y, Z, B: tk.constexpr = 16):
    x = tk.load(X, (0,), (B,))
    tk.store(Y, (0,), x * 0.1 + 3)
    tk.store(Z, (0,), x * 100000.0)


@backends
def test_literals_adopt_the_tile_dtype(backend):
    X = ((torch.arange(16) - 7.5) / 7).to(torch.float16)  # no zero: 0 * inf is nan
    Y, Z = nan_like(X), nan_like(X)
    k_literals[(1,)](X, Y, Z, backend=backend)
    lit = torch.tensor(0.1, dtype=torch.float16)  # 0.0999755859375: the literal is an fp16 constant
    assert Y.dtype == torch.float16 and torch.equal(Y, X * lit + 3)
    assert torch.equal(Z, (X.float() * float(torch.tensor(100000.0).half())).half())  # inf: out of fp16 range
    assert torch.isinf(Z).all()


# ---- scans: tuple values, @tk.func combiner, both directions ---------------------------------------------------

@tk.func
def compose_affine(a_l, b_l, a_r, b_r):
    return a_l * a_r, a_r * b_l + b_r  # not commutative: the operand order matters


@tk.kernel
def k_linrec(A, Bx, H, REVERSE: tk.constexpr, B: tk.constexpr = 16):
    a = tk.load(A, (0,), (B,), other=1.0)
    b = tk.load(Bx, (0,), (B,))
    aa, bb = tk.associative_scan((a, b), 0, compose_affine, reverse=REVERSE)
    tk.store(H, (0,), bb)


@pytest.mark.parametrize("reverse", [False, True])
@backends
def test_associative_scan_operand_order(backend, reverse):
    """h_t = a_t h_prev + b_t, run forward, or backward as flip(scan(flip(x))) (Triton's definition)."""
    a, b = rand(13, seed=17).sigmoid(), rand(13, seed=18)
    H = nan_like(a)
    k_linrec[(1,)](a, b, H, REVERSE=reverse, backend=backend)
    order = range(12, -1, -1) if reverse else range(13)
    want, h = torch.empty(13, dtype=torch.float64), 0.0
    for t in order:
        h = a[t].item() * h + b[t].item()
        want[t] = h
    tolerances.assert_close(H, want)


@tk.kernel
def k_shift_register(X, Y, B: tk.constexpr = 16):
    a = 0
    b = 0
    c = 0
    d = 0
    for k in tk.range(0, 5):  # each name takes the tile type only after the one before it has
        d = c
        c = b
        b = a
        a = tk.load(X, (k * B,), (B,))
    tk.store(Y, (0,), a * 1000 + b * 100 + c * 10 + d)


@backends
def test_loop_carried_types_settle_through_a_chain(backend):
    X = torch.arange(5.0).repeat_interleave(16)
    Y = nan_like(torch.empty(16))
    k_shift_register[(1,)](X, Y, backend=backend)
    assert torch.equal(Y, torch.full((16,), 4321.0))


@tk.kernel
def k_shadowing_names(X, Y, tl, triton, range, B: tk.constexpr = 16):
    x = tk.load(X, (0,), (B,), other=-float("inf"))
    tk.store(Y, (0,), tk.maximum(x, -1.0) * tl + triton + range)


@backends
def test_parameters_named_like_generated_code_globals(backend):
    """Scalar parameters called tl / triton / range must not shadow what the Triton source uses."""
    X = torch.arange(10.0)
    Y = nan_like(X)
    k_shadowing_names[(1,)](X, Y, 2.0, 1.0, 0.5, backend=backend)
    assert torch.equal(Y, X * 2 + 1.5)


def test_front_end_and_launch_layer_do_not_import_each_other():
    # regression: frontend.py imported kernel.py (for JitFunction) and kernel.py imported frontend.py (for
    # SourceInfo); both now depend on the leaf tilekit/jit.py. The launch layer may still call the front end.
    import ast
    import pathlib

    def imports(module):
        tree = ast.parse(pathlib.Path(tilekit.frontend.__file__).with_name(f"{module}.py").read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
    assert "kernel" not in imports("frontend")
    assert not {"frontend", "kernel"} & imports("jit")
    assert "jit" in imports("kernel") and "jit" in imports("frontend")
    assert tk.func is tilekit.jit.func and tk.JitFunction is tilekit.jit.JitFunction
