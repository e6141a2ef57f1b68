"""Generated source cannot be subverted by user names or user text (issue 7, section 2).

* A scalar parameter named like any identifier the emitters produce keeps its value (it used to be shadowed
  by a generated local in Triton: ``alpha=3`` came back as ``x*16``, ``x*x`` or zeros).
* A tensor next to a scalar named like its derived parameters (``X`` and ``X_ptr``) compiles.
* Kernels named ``tl``, like a C prelude helper (``b2f``, ``rnd_h``, ``i8``), 300 characters long, or in
  unicode, build and run on every backend (CUDA and HIP compile-only).
* A newline in the kernel file's path, or in a constexpr's repr, never becomes a line of generated code.

Kernels are written to files under ``tmp_path`` (tilekit parses kernel source from files), so the names and
paths under test are real.
"""
from __future__ import annotations

import builtins
import importlib.util
import itertools
import keyword
import re
import subprocess
import sys
import textwrap

import pytest
import torch

import tilekit as tk
from tilekit import tolerances
from tilekit.backends.cuda import nvrtc
from tilekit.backends.hip import hipcc_path

_counter = itertools.count()

HAS_OPENCL = importlib.util.find_spec("pyopencl") is not None
NVRTC_OK, NVRTC_WHY = nvrtc.available()
needs_opencl = pytest.mark.skipif(not HAS_OPENCL, reason="the OpenCL backend needs pyopencl "
                                  "(pip install 'tilekit[opencl]')")
needs_nvrtc = pytest.mark.skipif(not NVRTC_OK, reason=f"NVRTC unavailable: {NVRTC_WHY}")
needs_hipcc = pytest.mark.skipif(hipcc_path() is None, reason="hipcc is not on PATH "
                                 "(apt-get install hipcc libamdhip64-dev rocm-device-libs)")


def load_kernels(directory, source, module=None):
    """Import ``source`` from a new file in ``directory``; returns the module."""
    directory.mkdir(parents=True, exist_ok=True)
    name = module or f"tk_hygiene_{next(_counter)}"
    path = directory / f"{name}.py"
    path.write_text("import tilekit as tk\n\n" + textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SCALE = """
@tk.kernel
def {kernel}(X, Y, {scalar}, BLOCK: tk.constexpr = 64):
    pid = tk.program_id(0)
    start = pid * BLOCK
    offs = start + tk.arange(BLOCK)
    x = tk.load(X, (start,), (BLOCK,))
    v = tk.where(offs < X.shape[0], x * {scalar}, 0.0)
    tk.store(Y, (start,), v + x)
"""


def _code(source):
    """``source`` without its comment lines (the header quotes user text)."""
    return "\n".join(l for l in source.splitlines() if not l.lstrip().startswith(("#", "//")))


def _identifiers(source):
    return set(re.findall(r"\b[A-Za-z_][A-Za-z0-9_]*\b", _code(source)))


def _kernel_body(c_source):
    """The kernel's own part of a C source (its signature and body, after the prelude and helpers)."""
    return c_source[c_source.index("__kernel "):]


def generated_names():
    """Every identifier the emitters produce for SCALE, as a user could spell it, per emitter ("triton": its
    Triton module; "c": its OpenCL kernel): the names a scalar parameter must be free to take."""
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        mod = load_kernels(Path(d), SCALE.format(kernel="scale", scalar="alpha"))
        X, Y = torch.empty(100), torch.empty(100)
        found = {"triton": _identifiers(mod.scale.source("triton", X, Y, 3.0)),
                 "c": _identifiers(_kernel_body(mod.scale.source("opencl", X, Y, 3.0)))}
    reserved = {"backend", "num_warps", "num_stages", "tk", "X", "Y", "BLOCK", "scale", "None", "True", "False"}
    return {k: sorted(n for n in v if not keyword.iskeyword(n) and n not in reserved) for k, v in found.items()}


GENERATED = generated_names()
# The names the issue reported (the old emitter's locals and derived parameters), kept whatever the
# emitter now produces.
REPORTED = ["v_0", "v_1", "start_2", "x_6", "X_i0_4", "X_mask_5", "X_ptr", "X_shape0", "X_stride0", "tl",
            "triton", "range", "float", "p_alpha", "tk_tid"]
TRITON_NAMES = sorted(set(GENERATED["triton"]) | set(REPORTED))
C_NAMES = sorted(set(GENERATED["c"]) | set(REPORTED))
SCALAR_NAMES = sorted(set(TRITON_NAMES) | set(C_NAMES))
# One kernel per name costs a build each (~100 of them, minutes of CI): the reported names get their own
# kernel; every generated name is covered at once by test_every_generated_name_at_once_each_keeps_its_value,
# whose distinct weights per name catch any one of them shadowed.
ONE_KERNEL_EACH = sorted(REPORTED)


@pytest.fixture(scope="module")
def scale_kernels(tmp_path_factory):
    """One module holding one SCALE kernel per scalar name (imported once)."""
    src = "".join(SCALE.format(kernel=f"scale_{i}", scalar=n) for i, n in enumerate(SCALAR_NAMES))
    return load_kernels(tmp_path_factory.mktemp("scalars"), src)


def _check_scale(kernel, backend, n=100, alpha=3.0):
    X = torch.randn(n)
    Y = torch.full((n,), float("nan"))
    kernel[(tk.cdiv(n, 64),)](X, Y, alpha, backend=backend)
    tolerances.assert_close(Y, X * alpha + X, torch.float32)


@pytest.mark.parametrize("name", ONE_KERNEL_EACH)
def test_scalar_named_like_a_generated_identifier_keeps_its_value(name, scale_kernels):
    kernel = getattr(scale_kernels, f"scale_{SCALAR_NAMES.index(name)}")
    for backend in ("reference", "triton"):
        _check_scale(kernel, backend)


def test_the_names_read_from_the_source_include_locals_and_derived_parameters():
    """The parametrizations really cover generated names (not only the user's own)."""
    for names in GENERATED.values():
        assert any(re.fullmatch(r"v\d+_x", n) for n in names), names
        assert any(n.endswith("_ptr") for n in names) and any("_shape0" in n for n in names), names
        assert len(names) > 15, names


@needs_opencl
@pytest.mark.parametrize("name", ONE_KERNEL_EACH)
def test_scalar_named_like_a_generated_identifier_keeps_its_value_opencl(name, scale_kernels):
    _check_scale(getattr(scale_kernels, f"scale_{SCALAR_NAMES.index(name)}"), "opencl")


ALL_AT_ONCE = """
@tk.kernel
def every_name(X, Y, {params}, BLOCK: tk.constexpr = 32):
    start = tk.program_id(0) * BLOCK
    x = tk.load(X, (start,), (BLOCK,))
    tk.store(Y, (start,), x * ({total}))
"""


@pytest.fixture(scope="module")
def every_name(tmp_path_factory):
    names = [n for n in SCALAR_NAMES]
    src = ALL_AT_ONCE.format(params=", ".join(names), total=" + ".join(f"{n} * {i + 1}" for i, n in enumerate(names)))
    return load_kernels(tmp_path_factory.mktemp("every"), src).every_name, names


@needs_nvrtc
def test_every_generated_name_as_a_scalar_compiles_with_nvrtc(every_name):
    """Compile-only: a clash would be a redeclaration (or a macro/typedef clash) NVRTC rejects."""
    kernel, names = every_name
    X = torch.empty(64)
    art = kernel.compile("sm_80", X, X, *[1.0] * len(names), backend="cuda")
    assert art.binary[:4] == b"\x7fELF"


@needs_hipcc
def test_every_generated_name_as_a_scalar_compiles_with_hipcc(every_name):
    kernel, names = every_name
    X = torch.empty(64)
    art = kernel.compile("gfx90a", X, X, *[1.0] * len(names), backend="hip")
    assert art.binary


@pytest.mark.parametrize("backend", ["reference", "triton", pytest.param("opencl", marks=needs_opencl)])
def test_every_generated_name_at_once_each_keeps_its_value(every_name, backend):
    kernel, names = every_name
    n = 70
    X = torch.randn(n)
    Y = torch.full((n,), float("nan"))
    # nonzero values: a shadowed name then changes the weighted total (a zero would hide it)
    g = torch.Generator().manual_seed(31)
    vals = [float(v * s) for v, s in zip(torch.randint(1, 4, (len(names),), generator=g),
                                          torch.randint(0, 2, (len(names),), generator=g) * 2 - 1)]
    kernel[(tk.cdiv(n, 32),)](X, Y, *vals, backend=backend)
    total = sum(v * (i + 1) for i, v in enumerate(vals))
    tolerances.assert_close(Y, X * total, torch.float32)


TENSOR_AND_DERIVED = """
@tk.kernel
def derived(X, Y, {scalar}, BLOCK: tk.constexpr = 64):
    start = tk.program_id(0) * BLOCK
    tk.store(Y, (start,), tk.load(X, (start,), (BLOCK,)) * {scalar})
"""


@pytest.mark.parametrize("scalar", ["X_ptr", "X_shape0", "X_stride0", "Y_ptr", "t_X_ptr", "t_X_shape0", "s_X"])
@pytest.mark.parametrize("backend", ["reference", "triton", pytest.param("opencl", marks=needs_opencl)])
def test_tensor_next_to_a_scalar_named_like_its_parameters(tmp_path, scalar, backend):
    """Used to be `SyntaxError: duplicate argument 'X_ptr'` in the generated Triton module."""
    k = load_kernels(tmp_path, TENSOR_AND_DERIVED.format(scalar=scalar)).derived
    X = torch.randn(90)
    Y = torch.full((90,), float("nan"))
    k[(2,)](X, Y, -2.5, backend=backend)
    tolerances.assert_close(Y, X * -2.5, torch.float32)


# -- kernel names --

LONG = "k" + "_long" * 60  # 301 characters: Triton failed at 240 (file name too long); PoCL aborted at 260
KERNEL_NAMES = ["tl", "triton", "b2f", "rnd_h", "rnd_bf", "i8", "u16", "f2h", "h2f", "tk_b2f", "tk_rnd_h",
                "tk_u16", "atomic_add_16", "packed_code", "combine_0", "k_scale", "TK_FN", "barrier", "main",
                "ker_\u00e9t\u00e9_\u03b1", "\u6838", LONG]


@pytest.fixture(scope="module")
def named_kernels(tmp_path_factory):
    src = "".join(SCALE.format(kernel=n, scalar="alpha") for n in KERNEL_NAMES)
    return load_kernels(tmp_path_factory.mktemp("names"), src)


@pytest.mark.parametrize("name", KERNEL_NAMES, ids=lambda n: n if len(n) < 30 else f"long{len(n)}")
def test_odd_kernel_names_run(named_kernels, name):
    """`tl` used to give a bare AssertionError (the kernel function replaced `import triton.language as
    tl`); `b2f`, `rnd_h`, `i8` clashed with the C preludes' helpers and typedefs."""
    kernel = getattr(named_kernels, name)
    backends = ["reference", "triton"] + (["opencl"] if HAS_OPENCL else [])
    for backend in backends:
        _check_scale(kernel, backend)


@needs_nvrtc
@pytest.mark.parametrize("name", KERNEL_NAMES, ids=lambda n: n if len(n) < 30 else f"long{len(n)}")
def test_odd_kernel_names_compile_with_nvrtc(named_kernels, name):
    X = torch.empty(64)
    art = getattr(named_kernels, name).compile("sm_80", X, X, 1.0, backend="cuda")
    assert art.binary[:4] == b"\x7fELF"


@needs_hipcc
@pytest.mark.parametrize("name", ["b2f", "i8", "ker_\u00e9t\u00e9_\u03b1", LONG],
                         ids=["b2f", "i8", "unicode", "long301"])
def test_odd_kernel_names_compile_with_hipcc(named_kernels, name):
    X = torch.empty(64)
    art = getattr(named_kernels, name).compile("gfx90a", X, X, 1.0, backend="hip")
    assert art.binary


@needs_opencl
def test_a_300_character_kernel_name_does_not_abort_pocl(tmp_path):
    """PoCL aborted the whole process (SIGABRT) on a 260-character kernel name: run it in a child."""
    d = tmp_path / "mod"
    load_kernels(d, SCALE.format(kernel=LONG, scalar="alpha"), module="long_kernel")
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(d)!r})
        import long_kernel
        k = getattr(long_kernel, {LONG!r})
        X = torch.randn(100); Y = torch.full((100,), float("nan"))
        k[(2,)](X, Y, 3.0, backend="opencl")
        assert torch.allclose(Y, X * 4.0, atol=1e-5), (Y - X * 4).abs().max()
        print("ok")
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "TILEKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0 and "ok" in r.stdout, (r.returncode, r.stderr[-3000:])


def test_generated_symbols_are_bounded_ascii_and_prefixed(named_kernels):
    X = torch.empty(64)
    for name in ("ker_\u00e9t\u00e9_\u03b1", LONG, "b2f"):
        k = getattr(named_kernels, name)
        py = k.source("triton", X, X, 1.0)
        c = k.source("opencl", X, X, 1.0)
        for src in (py, c):
            assert src.isascii()
            assert max(len(i) for i in _identifiers(src)) <= 80
        fn = re.search(r"^def (\w+)\(", py, re.M).group(1)
        sym = re.search(r"void (\w+)\($", c, re.M).group(1)
        assert fn == sym and fn.startswith("k")


def test_every_prelude_definition_is_prefixed():
    """Every typedef, macro and helper the C preludes define is tk_/TK_-prefixed, and kernel symbols are not,
    so no kernel name can meet one."""
    mod_src = SCALE.format(kernel="scale", scalar="alpha")
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        k = load_kernels(Path(d), mod_src).scale
        X = torch.empty(64)
        for backend in ("cuda", "hip", "opencl"):
            src = k.source(backend, X, X, 1.0)
            prelude = src[:src.index(" k_scale(")]
            defined = re.findall(r"^\s*typedef .*?(\w+)(?:\s+__attribute__\(\(.*\)\))?;", prelude, re.M)
            defined += re.findall(r"^#define (\w+)", prelude, re.M)
            defined += re.findall(r"^(?:TK_FN|static[\w ]*?)\s+[\w ]+?\b(\w+)\(", prelude, re.M)
            assert len(defined) > 10, (backend, defined)
            bad = [n for n in defined if not n.lower().startswith("tk_")]
            assert not bad, (backend, bad)


# -- user text in templates --

def test_a_newline_in_the_kernel_path_cannot_inject_code(tmp_path):
    """The file path reaches the generated module's header comment; a newline in it used to run the
    line after it on import."""
    evil = tmp_path / "x\nimport builtins; builtins.tk_injected_by_path = 1\n#"
    mod = load_kernels(evil, SCALE.format(kernel="scale", scalar="alpha"))
    X = torch.empty(64)
    src = mod.scale.source("triton", X, X, 1.0)
    assert not any(line.startswith("import builtins") for line in src.splitlines()), src[:400]
    _check_scale(mod.scale, "triton")
    assert not hasattr(builtins, "tk_injected_by_path")
    for backend in ("cuda", "hip", "opencl"):
        c = mod.scale.source(backend, X, X, 1.0)
        assert all(line.startswith("//") for line in c.splitlines() if "injected" in line)
    if HAS_OPENCL:
        _check_scale(mod.scale, "opencl")


class EvilRepr:
    """A constexpr whose repr spans lines (a C directive and a Python statement)."""

    def __init__(self, v):
        self.v = v

    def __hash__(self):
        return hash(self.v)

    def __eq__(self, other):
        return isinstance(other, EvilRepr) and other.v == self.v

    def __repr__(self):
        return f"{self.v}\nimport builtins; builtins.tk_injected_by_repr = 1\n#define s_alpha 0\n#"


CX = """
@tk.kernel
def with_tag(X, Y, alpha, TAG: tk.constexpr, BLOCK: tk.constexpr = 64):
    start = tk.program_id(0) * BLOCK
    x = tk.load(X, (start,), (BLOCK,))
    tk.store(Y, (start,), x * alpha + x)
"""


def test_a_newline_in_a_constexpr_repr_cannot_inject_code(tmp_path):
    k = load_kernels(tmp_path, CX).with_tag
    X = torch.randn(100)
    tag = EvilRepr(7)
    src = k.source("triton", X, X, 3.0, TAG=tag)
    assert not any(line.startswith("import builtins") for line in src.splitlines())
    for backend in ["reference", "triton"] + (["opencl"] if HAS_OPENCL else []):
        Y = torch.full((100,), float("nan"))
        k[(2,)](X, Y, 3.0, TAG=tag, backend=backend)
        tolerances.assert_close(Y, X * 4.0, torch.float32)  # `#define s_alpha 0` would give Y == X
    assert not hasattr(builtins, "tk_injected_by_repr")
    for backend in ("cuda", "hip", "opencl"):
        c = k.source(backend, X, X, 3.0, TAG=tag)
        assert not any(line.startswith("#define s_alpha") for line in c.splitlines())


def test_a_template_value_that_spans_lines_is_an_error():
    """The backstop: whatever an emitter passes to a template must be one line."""
    from tilekit.backends.templating import ENV, comment
    with pytest.raises(ValueError, match="one line"):
        ENV.from_string("{{ x }}").render(x="a\nb")
    with pytest.raises(ValueError, match="one line"):
        ENV.from_string("{{ x }}").render(x="a\u2028b")
    assert "\n" not in comment("a\nb\\") and comment("a\nb\\").endswith("'")
