"""``check_bounds=True``: out-of-bounds gathers, scatters and atomics caught on the real backends.

The reference executor catches every access through an index tile that leaves its tensor unmasked
(tests/test_sanitizer.py). Without a check, the Triton and OpenCL backends catch none, and a scatter with a
bad index writes into whatever tensor lies next to it. With ``check_bounds=True`` (or
``TILEKIT_CHECK_BOUNDS=1``) the bounds pass (tilekit/passes/bounds.py) masks each such element off and
reports it through a hidden flag, and the launch raises ``tilekit.OutOfBoundsError`` naming the op and its
line, as the reference does.
"""
import importlib
import inspect
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import corpus
import tilekit as tk
from tilekit.backends.naming import tensor_base
from test_properties import check
from test_sanitizer import atomic_unmasked, gather_unmasked, line_of, scatter_unmasked
from tilekit.backends import get_backend
from tilekit.backends.toolchain import gpu_present
from tilekit.passes.bounds import WORDS_PER_CHECK

HERE = __file__
tk_kernel = importlib.import_module("tilekit.kernel")  # the module (tilekit.kernel is also the decorator)
SANITIZER = inspect.getsourcefile(gather_unmasked.fn)

_ocl_ok, _ocl_why = get_backend("opencl").available()
needs_opencl = pytest.mark.skipif(not _ocl_ok, reason=f"OpenCL backend unavailable: {_ocl_why}")
DEVICE_BACKENDS = [pytest.param("triton", id="triton"),
                   pytest.param("opencl", id="opencl", marks=needs_opencl)]


# ---- the seeded bugs: kernels beyond test_sanitizer's -------------------------------------------------------

@tk.kernel
def gather_off_by_one_mask(X, Idx, Out, BM: tk.constexpr = 16, BN: tk.constexpr = 16):
    rows = tk.load(Idx, (0,), (BM,))
    ok = (rows >= 0) & (rows <= X.shape[0])          # the bug: <= lets rows == X.shape[0] through
    tk.store(Out, (0, 0), tk.load(X, (rows, 0), (BM, BN), mask=ok[:, None]))


@tk.kernel
def embedding_1d(Table, Idx, Out, B: tk.constexpr = 16):
    ids = tk.load(Idx, (0,), (B,))                   # a 64-bit index tile into a 1-d table
    tk.store(Out, (0,), tk.load(Table, (ids,), (B,)))


def _sanitizer_args(idx, n_src=16, n_out=16):
    """test_sanitizer's arguments, with X inside a larger allocation: an unchecked launch's stray reads
    stay in memory this process owns."""
    X = torch.randn(n_src + 64, 16)[32:32 + n_src]
    return X, torch.tensor(idx, dtype=torch.int32), torch.zeros(n_out, 16)


def _neighbours(rows=16):
    """``Out`` (16 x 16) with a tensor on each side of it in one allocation: (Out, before, after)."""
    buf = torch.randn(3 * rows, 16)
    return buf[rows:2 * rows], buf[:rows], buf[2 * rows:]


BAD_ROW = list(range(15)) + [16]
NEGATIVE_ROW = [-1] + list(range(15))


def bug_gather_past_end():
    return gather_unmasked, (1,), _sanitizer_args(BAD_ROW), "tk.load reads X", "v = tk.load(X, (rows, 0), (BM, BN))", 0, 16


def bug_gather_negative():
    return gather_unmasked, (1,), _sanitizer_args(NEGATIVE_ROW), "tk.load reads X", "v = tk.load(X, (rows, 0), (BM, BN))", 0, -1


def bug_scatter_past_end():
    out, _, _ = _neighbours()
    return (scatter_unmasked, (1,), (torch.randn(16, 16), torch.tensor(BAD_ROW, dtype=torch.int32), out),
            "tk.store writes Out", "tk.store(Out, (rows, 0)", 0, 16)


def bug_scatter_negative():
    out, _, _ = _neighbours()
    return (scatter_unmasked, (1,), (torch.randn(16, 16), torch.tensor(NEGATIVE_ROW, dtype=torch.int32), out),
            "tk.store writes Out", "tk.store(Out, (rows, 0)", 0, -1)


def bug_atomic_column():
    return (atomic_unmasked, (1,), _sanitizer_args(list(range(1, 17))), "tk.atomic_add writes Out",
            "tk.atomic_add(Out, (0, cols)", 1, 16)


def bug_off_by_one_mask():
    return (gather_off_by_one_mask, (1,), _sanitizer_args(list(range(8)) + [16] + list(range(7))),
            "tk.load reads X", "tk.load(X, (rows, 0), (BM, BN), mask=ok[:, None])", 0, 16)


def bug_embedding_int64():
    idx = torch.arange(16, dtype=torch.int64)
    idx[5] = 2**40                                   # far beyond int32: the report saturates
    return (embedding_1d, (1,), (torch.randn(30), idx, torch.zeros(16)), "tk.load reads Table",
            "tk.store(Out, (0,), tk.load(Table, (ids,), (B,)))", 0, 2**31 - 1)


def bug_second_program_in_loop():
    # the corpus gather (masks only negative indices), 3 programs x 2 column blocks; only program 2 is bad
    idx = torch.randint(0, 40, (40,), dtype=torch.int32, generator=torch.Generator().manual_seed(3))
    idx[37] = 40
    X, Out = torch.randn(40, 50), torch.zeros(40, 50)
    return (corpus.gather_rows, (3,), (X, idx, Out), "tk.load reads X", "v = tk.load(X, (rows, k), (BM, BN)", 0, 40)


BUGS = [bug_gather_past_end, bug_gather_negative, bug_scatter_past_end, bug_scatter_negative, bug_atomic_column,
        bug_off_by_one_mask, bug_embedding_int64, bug_second_program_in_loop]
BUG_IDS = [b.__name__[4:] for b in BUGS]


def _launch(bug, backend, **options):
    kernel, grid, args, *_ = bug()
    kernel[grid](*args, backend=backend, **options)


@pytest.mark.parametrize("bug", BUGS, ids=BUG_IDS)
def test_reference_catches_each_seeded_bug(bug):
    kernel, grid, args, what, text, dim, _ = bug()
    with pytest.raises(tk.OutOfBoundsError) as info:
        kernel[grid](*args, backend="reference")
    file = inspect.getsourcefile(kernel.fn)
    assert f"{file}:{line_of(kernel, text)}:" in str(info.value) and what in str(info.value)


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("bug", BUGS, ids=BUG_IDS)
def test_check_bounds_catches_each_seeded_bug(bug, backend):
    kernel, grid, args, what, text, dim, index = bug()
    with pytest.raises(tk.OutOfBoundsError) as info:
        kernel[grid](*args, backend=backend, check_bounds=True)
    e = info.value
    file = inspect.getsourcefile(kernel.fn)
    line = line_of(kernel, text)
    msg = str(e)
    assert msg.startswith(f"{file}:{line}: {what}"), msg
    assert text in msg and "mask=" in msg and "outside its shape" in msg and backend in msg
    assert (e.filename, e.lineno, e.dim, e.index, e.backend) == (file, line, dim, index, backend)
    assert e.op == what.split()[0] and e.count >= 1


def test_the_report_counts_offending_elements_over_programs():
    # gather_rows reads a 32-wide column block twice per row of 50 columns: one bad row gives 50 elements
    kernel, grid, args, *_ = bug_second_program_in_loop()
    with pytest.raises(tk.OutOfBoundsError) as info:
        kernel[grid](*args, backend="triton", check_bounds=True)
    assert info.value.count == 50 and "50 elements out of range" in str(info.value)


# ---- the access itself is suppressed: a bad index cannot reach a neighbouring tensor ---------------------

@pytest.mark.parametrize("idx,hit", [(BAD_ROW, "after"), (NEGATIVE_ROW, "before")])
def test_unchecked_triton_scatter_corrupts_its_neighbour(idx, hit):
    """Why the option exists: without it the bad row lands in the next (or previous) tensor in memory."""
    out, before, after = _neighbours()
    saved = {"before": before.clone(), "after": after.clone()}
    X = torch.randn(16, 16)
    scatter_unmasked[(1,)](X, torch.tensor(idx, dtype=torch.int32), out, backend="triton")
    bad = idx.index(16 if hit == "after" else -1)
    row = 0 if hit == "after" else 15
    neighbour = after if hit == "after" else before
    assert torch.equal(neighbour[row], X[bad]) and not torch.equal(neighbour, saved[hit])


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("idx", [BAD_ROW, NEGATIVE_ROW], ids=["past-end", "negative"])
def test_checked_scatter_leaves_neighbours_intact(idx, backend):
    out, before, after = _neighbours()
    saved_before, saved_after = before.clone(), after.clone()
    X = torch.randn(16, 16)
    Idx = torch.tensor(idx, dtype=torch.int32)
    with pytest.raises(tk.OutOfBoundsError):
        scatter_unmasked[(1,)](X, Idx, out, backend=backend, check_bounds=True)
    assert torch.equal(before, saved_before) and torch.equal(after, saved_after)
    good = [i for i, r in enumerate(idx) if 0 <= r < 16]
    assert torch.equal(out[Idx[good].long()], X[good])  # the in-range rows were still written


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
def test_checked_atomic_adds_only_in_range_elements(backend):
    X, Idx, Out = _sanitizer_args(list(range(1, 17)))
    with pytest.raises(tk.OutOfBoundsError):
        atomic_unmasked[(1,)](X, Idx, Out, backend=backend, check_bounds=True)
    want = torch.zeros(16, 16)
    want[:, 1:] = X[:, :15]
    torch.testing.assert_close(Out, want)  # column 16 went nowhere, not into the next row's column 0


# ---- exactly the reference's rule: counts agree with an independent count, no false positives -------------

@tk.kernel
def window_gather(X, Idx, Out, c, MASKED: tk.constexpr, BM: tk.constexpr = 16, BN: tk.constexpr = 16):
    rows = tk.load(Idx, (0,), (BM,))
    keep = (tk.arange(BN) % 3) != 1
    if MASKED:
        v = tk.load(X, (rows, c), (BM, BN), other=-5.0, mask=keep[None, :])
    else:
        v = tk.load(X, (rows, c), (BM, BN), other=-5.0)
    tk.store(Out, (0, 0), v)


def _expected_count(rows, c, n_rows, n_cols, masked, BN=16):
    """Elements the reference's rule calls out of bounds: inside the column window's edge mask and the
    user mask, with a row index outside [0, n_rows)."""
    cols = c + torch.arange(BN)
    col_ok = (cols >= 0) & (cols < n_cols)
    if masked:
        col_ok &= (torch.arange(BN) % 3) != 1
    row_bad = (rows < 0) | (rows >= n_rows)
    return int((row_bad[:, None] & col_ok[None, :]).sum())


@pytest.mark.parametrize("backend", ["reference", "triton"])
@given(n_rows=st.integers(1, 20), n_cols=st.integers(1, 40), c=st.integers(-20, 40),
       rows=st.lists(st.integers(-3, 24), min_size=16, max_size=16), masked=st.booleans())
@example(n_rows=16, n_cols=16, c=0, rows=list(range(16)), masked=False)      # all in range
@example(n_rows=5, n_cols=16, c=16, rows=[9] * 16, masked=False)            # bad rows, window past the edge
@example(n_rows=5, n_cols=16, c=-16, rows=[-1] * 16, masked=True)           # bad rows, window before it
@example(n_rows=5, n_cols=3, c=0, rows=[7] * 16, masked=True)               # only masked-off columns in range
def test_counts_match_the_reference_rule(backend, n_rows, n_cols, c, rows, masked):
    X = torch.randn(n_rows, n_cols)
    Idx = torch.tensor(rows, dtype=torch.int32)
    Out = torch.full((16, 16), float("nan"))
    want = _expected_count(Idx, c, n_rows, n_cols, masked)
    if backend == "reference":  # the reference itself raises exactly when the count is non-zero
        raised = False
        try:
            window_gather[(1,)](X, Idx, Out, c, masked, backend="reference")
        except tk.OutOfBoundsError:
            raised = True
        assert raised == (want > 0)
        return
    try:
        window_gather[(1,)](X, Idx, Out, c, masked, backend=backend, check_bounds=True)
        got = 0
    except tk.OutOfBoundsError as e:
        got = e.count
    assert got == want
    # and what was read: in-range elements are X's, everything else `other`
    cols = c + torch.arange(16)
    ok = ((Idx >= 0) & (Idx < n_rows))[:, None] & ((cols >= 0) & (cols < n_cols))[None, :]
    if masked:
        ok &= ((torch.arange(16) % 3) != 1)[None, :]
    expect = torch.full((16, 16), -5.0)
    r, k = torch.nonzero(ok, as_tuple=True)
    expect[r, k] = X[Idx[r].long(), cols[k]]
    assert torch.equal(Out, expect)


def test_the_pass_run_by_the_reference_executor_counts_the_same():
    """The rewritten IR is ordinary IR: the reference executor runs it (it then masks, so never raises)
    and its flag words are the device's."""
    from tilekit import reference
    X, Idx, Out = _sanitizer_args(list(range(10)) + [16, -1, 3, 20, 4, 5])
    runtime, cx, options = gather_unmasked.bind((X, Idx, Out), {})
    spec, _ = gather_unmasked.specialize(runtime, cx, {"check_bounds": True}, backend="triton")
    fn = gather_unmasked._ir(spec)
    checks = fn.bounds_checks
    assert [p.name for p in fn.params][-1] == checks.param and len(checks.checks) == 1
    flags = torch.zeros(checks.words, dtype=torch.int32)
    reference.run(fn, {"X": X, "Idx": Idx, "Out": Out, checks.param: flags}, (1,))
    assert flags[0] == 3 * 16 and int(flags[1]) in (16, -1, 20)  # three bad rows of 16 columns
    e = checks.error(flags.tolist(), {"X": (16, 16)})
    assert isinstance(e, tk.OutOfBoundsError) and e.count == 48


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
def test_legal_kernels_are_not_flagged(backend):
    """Masked gathers that cover their bad indices, and edge-masked block accesses at any offset."""
    from test_sanitizer import gather_masked, scatter_masked, window_copy
    X, Idx, Out = _sanitizer_args([3, 16, 0, -2, 15, 7, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    gather_masked[(1,)](X, Idx, Out, backend=backend, check_bounds=True)
    for i, r in enumerate(Idx.tolist()):
        assert torch.equal(Out[i], X[r] if 0 <= r < 16 else torch.full((16,), -1.0))
    X, Idx, Out = _sanitizer_args(BAD_ROW)
    scatter_masked[(1,)](X, Idx, Out, backend=backend, check_bounds=True)
    assert torch.equal(Out[:15], X[:15])
    X = torch.randn(13, 37)
    Y = torch.full((13, 37), float("nan"))
    window_copy[(1,)](X, Y, -3, 30, backend=backend, check_bounds=True)  # no gather: nothing to check
    assert torch.equal(Y[:13, 30:], X[:13, 30:] + 1)


GATHERING_CASES = {"gather_rows", "scatter_add_rows"}  # the corpus kernels with index-tile accesses


def _corpus_params():
    """Every corpus case at a mid shape; the gathering ones also at every edge shape and index dtype."""
    out = []
    for case in corpus.CASES:
        dtype = torch.float32 if torch.float32 in case.dtypes else case.dtypes[0]
        mid = tuple(max(lo, (lo + hi) // 2) | 1 for lo, hi in case.dims)
        gathers = case.name in GATHERING_CASES
        for shape in (mid,) + (tuple(case.edge_shapes) if gathers else ()):
            out.append(pytest.param(case, shape, dtype, case.variants[:2] if gathers else case.variants[:1],
                                    id=f"{case.name}-{'x'.join(map(str, shape))}"))
    return out


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("case,shape,dtype,variants", _corpus_params())
def test_corpus_is_not_flagged(case, shape, dtype, variants, backend, monkeypatch):
    """Every corpus kernel (the process-wide default turned on) runs unflagged and still right; exactly the
    gathering ones carry checks."""
    monkeypatch.setattr(tk_kernel, "CHECK_BOUNDS", True)
    config = case.configs_for(shape)[-1]
    for variant in variants:
        got, want, args = corpus.run_case(case, backend, shape, dtype, config, 11, variant)
        check(case, got, want, dtype, args)
    variants_checked = [b for key, b in case.kernel._bounds.items() if ("check_bounds", (bool, True)) in key[3]]
    assert all((b is not None) == (case.name in GATHERING_CASES) for b in variants_checked)


def test_only_kernels_with_gathers_change():
    """A kernel without an index-tile access compiles to the same code with the check on (it costs nothing)."""
    from test_sanitizer import window_copy
    X, Y = torch.randn(5, 5), torch.randn(5, 5)
    assert window_copy.source("triton", X, Y, 0, 0, check_bounds=True) == window_copy.source("triton", X, Y, 0, 0)
    src = gather_unmasked.source("triton", *_sanitizer_args(BAD_ROW), check_bounds=True)
    flags = tensor_base("tk_bounds_flags") + "_ptr"
    assert flags in src and f"tl.atomic_add({flags}" in src


# ---- the option itself: launch keyword, process-wide default, specialization key ------------------------

def test_check_bounds_is_part_of_the_key():
    X, Idx, Out = _sanitizer_args(BAD_ROW)
    gather_unmasked[(1,)](X, Idx, Out, backend="triton")            # unchecked: silently reads garbage
    with pytest.raises(tk.OutOfBoundsError):
        gather_unmasked[(1,)](X, Idx, Out, backend="triton", check_bounds=True)
    gather_unmasked[(1,)](X, Idx, Out, backend="triton", check_bounds=False)
    with pytest.raises(tk.OutOfBoundsError):                        # the warm path, checked again
        gather_unmasked[(1,)](X, Idx, Out, backend="triton", check_bounds=True)


def test_process_wide_default(monkeypatch):
    X, Idx, Out = _sanitizer_args(BAD_ROW)
    gather_unmasked[(1,)](X, Idx, Out, backend="triton")
    monkeypatch.setattr(tk_kernel, "CHECK_BOUNDS", True)
    with pytest.raises(tk.OutOfBoundsError):
        gather_unmasked[(1,)](X, Idx, Out, backend="triton")
    gather_unmasked[(1,)](X, Idx, Out, backend="triton", check_bounds=False)  # a launch may opt out


def test_environment_variable_turns_it_on():
    code = ("import sys, torch, tilekit as tk; sys.path.insert(0, %r); from test_sanitizer import gather_unmasked\n"
            "idx = torch.tensor(list(range(15)) + [16], dtype=torch.int32)\n"
            "try:\n    gather_unmasked[(1,)](torch.randn(16, 16), idx, torch.zeros(16, 16), backend='triton')\n"
            "except tk.OutOfBoundsError as e:\n    print('CAUGHT', e.lineno)\n") % os.path.dirname(HERE)
    env = dict(os.environ, TILEKIT_CHECK_BOUNDS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == f"CAUGHT {line_of(gather_unmasked, 'v = tk.load(X, (rows, 0), (BM, BN))')}", out.stderr


def test_bad_option_value_and_reserved_name():
    X, Idx, Out = _sanitizer_args(BAD_ROW)
    with pytest.raises(TypeError, match="check_bounds must be True or False"):
        gather_unmasked[(1,)](X, Idx, Out, backend="triton", check_bounds="yes")
    with pytest.raises(tk.CompileError, match="reserved for launch options"):
        @tk.kernel
        def k(X, check_bounds):
            pass


def test_reference_ignores_the_option_and_always_checks():
    X, Idx, Out = _sanitizer_args(BAD_ROW)
    with pytest.raises(tk.OutOfBoundsError, match=r"program id \(0, 0, 0\)"):  # the reference's own message
        gather_unmasked[(1,)](X, Idx, Out, backend="reference", check_bounds=True)


def test_ir_shows_the_checks():
    text = gather_unmasked.ir(*_sanitizer_args(BAD_ROW), check_bounds=True)
    assert "tk_bounds_flags" in text and "atomic_rmw" in text
    assert "tk_bounds_flags" not in gather_unmasked.ir(*_sanitizer_args(BAD_ROW))


def test_flag_parameter_name_never_collides():
    @tk.kernel
    def clash(X, Idx, tk_bounds_flags, BM: tk.constexpr = 16):
        rows = tk.load(Idx, (0,), (BM,))
        tk.store(tk_bounds_flags, (0,), tk.load(X, (rows,), (BM,)))
    X, Idx, O = torch.randn(16), torch.tensor(BAD_ROW, dtype=torch.int32), torch.zeros(16)
    with pytest.raises(tk.OutOfBoundsError, match="tk.load reads X"):
        clash[(1,)](X, Idx, O, backend="triton", check_bounds=True)
    torch.testing.assert_close(O[:15], X[:15])


# ---- CUDA and HIP: compiled here, launched only where a GPU is ----------------------------------------------

def _meta_args():
    return (torch.empty(16, 16, device="meta"), torch.empty(16, dtype=torch.int32, device="meta"),
            torch.empty(16, 16, device="meta"))


def _nvrtc_ok():
    try:
        from tilekit.backends.cuda import nvrtc
    except Exception as e:  # pragma: no cover
        return False, str(e)
    return nvrtc.available()


_nv_ok, _nv_why = _nvrtc_ok()


@pytest.mark.skipif(not _nv_ok, reason=f"NVRTC unavailable: {_nv_why} (pip install 'tilekit[nvrtc]')")
@pytest.mark.parametrize("kernel", [gather_unmasked, scatter_unmasked, atomic_unmasked], ids=lambda k: k.__name__)
def test_checked_kernel_compiles_for_sm_80_with_flag_writes(kernel):
    art = kernel.compile("sm_80", *_meta_args(), backend="cuda", check_bounds=True)
    plain = kernel.compile("sm_80", *_meta_args(), backend="cuda")
    flags = tensor_base("tk_bounds_flags") + "_ptr"
    assert flags in art.source and flags not in plain.source
    ptx = art.asm["ptx"]
    # the count is an atomic add into the flag (red/atom.global.add), the index a plain global store
    assert ptx.count("atom.global.add") + ptx.count("red.global.add") > \
        plain.asm["ptx"].count("atom.global.add") + plain.asm["ptx"].count("red.global.add")
    assert art.resources["spills"] == 0


def _hipcc():
    try:
        from tilekit.backends.hip import hipcc_path
    except Exception:  # pragma: no cover
        return None
    return hipcc_path()


@pytest.mark.skipif(_hipcc() is None, reason="hipcc is not on PATH (apt-get install hipcc libamdhip64-dev "
                    "rocm-device-libs)")
def test_checked_kernel_compiles_for_gfx90a_with_flag_writes():
    art = gather_unmasked.compile("gfx90a", *_meta_args(), backend="hip", check_bounds=True)
    plain = gather_unmasked.compile("gfx90a", *_meta_args(), backend="hip")
    assert tensor_base("tk_bounds_flags") + "_ptr" in art.source
    asm, plain_asm = art.asm["amdgcn"], plain.asm["amdgcn"]
    assert asm.count("global_atomic_add") > plain_asm.count("global_atomic_add")
    assert art.resources["spills"] == 0


def test_aot_triton_compiles_the_check_for_sm_90():
    art = gather_unmasked.compile("sm_90", *_meta_args(), check_bounds=True)
    assert "tk_bounds_flags" in art.source and ("atom.global" in art.asm["ptx"] or "red.global" in art.asm["ptx"])


@pytest.mark.skipif(not gpu_present("nvidia"), reason="needs an NVIDIA GPU (and CuPy for the cuda backend); "
                    "the flag is allocated on the arguments' device and read back after the launch")
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_launch_catches_and_suppresses(backend):  # pragma: no cover - runs only where a GPU is
    if backend == "cuda":
        pytest.importorskip("cupy", reason="the cuda backend launches through CuPy")
    buf = torch.randn(48, 16, device="cuda")
    out, before, after = buf[16:32], buf[:16], buf[32:]
    saved = (before.clone(), after.clone())
    X = torch.randn(16, 16, device="cuda")
    Idx = torch.tensor(BAD_ROW, dtype=torch.int32, device="cuda")
    with pytest.raises(tk.OutOfBoundsError) as info:
        scatter_unmasked[(1,)](X, Idx, out, backend=backend, check_bounds=True)
    assert info.value.index == 16 and info.value.backend == backend
    assert torch.equal(before, saved[0]) and torch.equal(after, saved[1])


@tk.kernel
def packed_gather(W, Idx, Out, BM: tk.constexpr = 8, BN: tk.constexpr = 32):
    rows = tk.load(Idx, (0,), (BM,))
    tk.store(Out, (0, 0), tk.load(W, (rows, 0), (BM, BN)).to(tk.float32))


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("idx_dtype", [torch.uint8, torch.int16], ids=["uint8", "int16"])
def test_packed_tensor_and_narrow_index_dtypes(backend, idx_dtype):
    """Logical shapes of a packed tensor; narrow index tiles compare in int32 (no wrap of the bound)."""
    w = torch.randint(-4, 4, (10, 37), generator=torch.Generator().manual_seed(5))
    packed = tk.pack(w, tk.int3)
    idx = torch.tensor([0, 9, 3, 2, 1, 5, 6, 7], dtype=idx_dtype)
    out = torch.zeros(8, 32)
    packed_gather[(1,)](packed, idx, out, backend=backend, check_bounds=True)
    assert torch.equal(out, w[idx.long(), :32].float())
    idx[3] = 200
    with pytest.raises(tk.OutOfBoundsError, match=r"tk.load reads W\[200, :\] outside its shape \[10, 37\]") as info:
        packed_gather[(1,)](packed, idx, out, backend=backend, check_bounds=True)
    assert info.value.count == 32
