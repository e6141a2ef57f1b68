"""The one op table: every Tile IR op with its traits, and every elementwise / reduction / atomic kind with
its meaning (numpy, for the reference executor and constant folding) and its spelling per backend.

The typing rules (``ir.infer_types``), the verifier, the reference executor, the passes, the Triton and C
emitters, the ``tk.*`` builtins and the tests all read these tables, so adding a regular op is one entry
here. Ops whose semantics differ by dtype in ways a format string cannot say (integer ``neg``/``abs``,
``//``, shifts, ...) keep a small hand-written override in each consumer; their *names* still live here,
so the verifier rejects anything else.

Spellings are format strings over the operand ``{x}`` (binary: ``{a}``, ``{b}``). In C spellings any other
``{name}`` is a math function, resolved through the dialect (``Dialect.math_name``), and ``{lit_K}`` is the
literal ``K`` in the result's float type. Triton spellings see operands already widened to fp32.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class Trait(enum.Flag):
    NONE = 0
    PURE = enum.auto()           # no side effect: removable when unused
    ELEMENTWISE = enum.auto()    # one result element from the same element of each operand
    FOLDABLE = enum.auto()       # the constant folder may evaluate it on scalar constants
    READS_MEMORY = enum.auto()
    WRITES_MEMORY = enum.auto()
    REDUCTION = enum.auto()
    SCAN = enum.auto()
    REGION = enum.auto()         # holds blocks ending in ``yield``
    TERMINATOR = enum.auto()


T = Trait
# Every IR op. The verifier rejects a name not here.
IR_OPS = {
    "const": T.PURE, "program_id": T.PURE, "num_programs": T.PURE, "dim": T.PURE, "arange": T.PURE,
    "full": T.PURE,
    "load": T.PURE | T.READS_MEMORY,
    "store": T.WRITES_MEMORY,
    "atomic_rmw": T.READS_MEMORY | T.WRITES_MEMORY,
    "unary": T.PURE | T.ELEMENTWISE | T.FOLDABLE, "binary": T.PURE | T.ELEMENTWISE | T.FOLDABLE,
    "cmp": T.PURE | T.ELEMENTWISE | T.FOLDABLE, "cast": T.PURE | T.ELEMENTWISE | T.FOLDABLE,
    "where": T.PURE | T.ELEMENTWISE,
    "broadcast": T.PURE, "expand_dims": T.PURE, "reshape": T.PURE, "trans": T.PURE,
    "slice": T.PURE,            # x[..., start:start+size, ...] along one axis (static bounds)
    "reduce": T.PURE | T.REDUCTION, "cumsum": T.PURE | T.SCAN, "scan": T.PURE | T.SCAN | T.REGION,
    "mma": T.PURE,
    "for": T.REGION, "if": T.REGION,
    "yield": T.TERMINATOR,
}
del T


def has(op_name: str, trait: Trait) -> bool:
    return bool(IR_OPS.get(op_name, Trait.NONE) & trait)


MEMORY_OPS = tuple(n for n in IR_OPS if has(n, Trait.READS_MEMORY | Trait.WRITES_MEMORY))
ELEMENTWISE_OPS = tuple(n for n in IR_OPS if has(n, Trait.ELEMENTWISE))


# ---- elementwise kinds ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Unary:
    name: str
    numpy: object = None        # float semantics (computed in fp32/fp64, rounded by the caller)
    triton: str | None = None   # over {x} in fp32 (narrow floats are widened, the result narrowed)
    c: str | None = None        # over {x}; rounded to narrow floats by the emitter
    float_only: bool = False    # integer operands are computed in fp32 (the front end inserts the cast)
    builtin: bool = True        # exposed as tk.<name>
    torch: str | None = None    # the independent test oracle, a torch attribute path
    domain: str = "real"        # "positive": the tests draw operands > 0


def _softplus(x):
    """log(1 + exp(x)), and x itself above 20 (PyTorch's threshold), in float32 (float64 stays float64)."""
    x = np.asarray(x)
    if x.dtype != np.float64:
        x = x.astype(np.float32)
    return np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))


_TANH_TL = ("tl.where({x} >= 0, 1.0, -1.0) * (1.0 - tl.exp(-2.0 * tl.abs({x}))) / "
            "(1.0 + tl.exp(-2.0 * tl.abs({x})))")  # sign(x) (1 - e) / (1 + e), e = exp(-2|x|): stable, core tl

UNARY = {u.name: u for u in (
    # irregular: integer and float meanings differ; each consumer spells them itself
    Unary("neg", builtin=False), Unary("not", builtin=False), Unary("invert", builtin=False),
    Unary("abs", np.abs, "tl.abs({x})", "{fabs}({x})", torch="abs"),
    # regular float math
    Unary("exp", np.exp, "tl.exp({x})", "{exp}({x})", True, torch="exp"),
    Unary("exp2", np.exp2, "tl.exp2({x})", "{exp2}({x})", True, torch="exp2"),
    Unary("log", np.log, "tl.log({x})", "{log}({x})", True, torch="log", domain="positive"),
    Unary("log2", np.log2, "tl.log2({x})", "{log2}({x})", True, torch="log2", domain="positive"),
    Unary("sqrt", np.sqrt, "tl.sqrt({x})", "{sqrt}({x})", True, torch="sqrt", domain="positive"),
    Unary("rsqrt", lambda x: 1.0 / np.sqrt(x), "tl.rsqrt({x})", "({lit_1} / {sqrt}({x}))", True, torch="rsqrt",
          domain="positive"),
    Unary("sigmoid", lambda x: 1.0 / (1.0 + np.exp(-x)), "1.0 / (1.0 + tl.exp(-{x}))",
          "({lit_1} / ({lit_1} + {exp}(-({x}))))", True, torch="sigmoid"),
    Unary("tanh", np.tanh, _TANH_TL, "{tanh}({x})", True, torch="tanh"),
    Unary("softplus", _softplus, "tl.where({x} > 20.0, {x}, tl.log(1.0 + tl.exp(tl.minimum({x}, 20.0))))",
          "(({x}) > {lit_20} ? ({x}) : {log1p}({exp}({fmin}(({x}), {lit_20}))))", True,
          torch="nn.functional.softplus"),
    Unary("sin", np.sin, "tl.sin({x})", "{sin}({x})", True, torch="sin"),
    Unary("cos", np.cos, "tl.cos({x})", "{cos}({x})", True, torch="cos"),
    Unary("floor", np.floor, "tl.floor({x})", "{floor}({x})", True, torch="floor"),
    Unary("ceil", np.ceil, "tl.ceil({x})", "{ceil}({x})", True, torch="ceil"),
)}
FLOAT_ONLY_UNARY = frozenset(n for n, u in UNARY.items() if u.float_only)
UNARY_BUILTINS = tuple(n for n, u in UNARY.items() if u.builtin)


@dataclass(frozen=True)
class Binary:
    name: str
    symbol: str | None = None   # the infix operator (Python and C) where one exists
    float_np: object = None     # float semantics (None: integer/bool only)
    int_np: object = None       # integer semantics in int64 before wrapping (None: irregular, overridden)
    bool_np: object = None
    nonneg: bool = False        # nonnegative operands give a nonnegative result (edge-mask analysis)
    int_only: bool = False      # bitwise: floats are rejected by the front end


BINARY = {b.name: b for b in (
    Binary("add", "+", np.add, np.add, nonneg=True),
    Binary("sub", "-", np.subtract, np.subtract),
    Binary("mul", "*", np.multiply, np.multiply, nonneg=True),
    Binary("div", "/", np.divide),
    Binary("floordiv", "//", lambda a, b: np.floor(a / b), nonneg=True),
    Binary("mod", "%", np.fmod, nonneg=True),
    Binary("maximum", None, np.maximum, np.maximum, np.logical_or, nonneg=True),
    Binary("minimum", None, np.minimum, np.minimum, np.logical_and, nonneg=True),
    Binary("pow", None, np.power, np.power),
    Binary("and", "&", None, np.bitwise_and, np.logical_and, nonneg=True, int_only=True),
    Binary("or", "|", None, np.bitwise_or, np.logical_or, int_only=True),
    Binary("xor", "^", None, np.bitwise_xor, np.logical_xor, int_only=True),
    Binary("shl", "<<", int_only=True),
    Binary("shr", ">>", nonneg=True, int_only=True),
)}

COMPARE = {"lt": ("<", np.less), "le": ("<=", np.less_equal), "gt": (">", np.greater),
           "ge": (">=", np.greater_equal), "eq": ("==", np.equal), "ne": ("!=", np.not_equal)}


# ---- reductions and atomics -------------------------------------------------------------------------

@dataclass(frozen=True)
class Reduce:
    name: str
    binary: str          # the elementwise op that combines two partials
    numpy: object
    triton_combiner: str  # Triton's own combiner (the interpreter runs these as one numpy reduction)


REDUCE = {r.name: r for r in (
    Reduce("sum", "add", np.sum, "tl.standard._sum_combine"),
    Reduce("max", "maximum", np.max, "tl.standard._elementwise_max"),
    Reduce("min", "minimum", np.min, "tl.standard._elementwise_min"),
)}


def _add_dtypes(dt):
    from . import dtypes as D
    return dt.is_float and dt.bits >= 16 or dt in (D.int32, D.int64, D.uint32)


@dataclass(frozen=True)
class AtomicRMW:
    """``atomic_rmw{kind}``: ``T[i] = combine(T[i], v)`` per element, atomically; ``tk.atomic_<kind>``."""
    kind: str
    numpy: object        # the ufunc that combines old and new (applied element by element, in index order)
    triton: str          # the tl function
    dtypes: object       # predicate: which tensor dtypes the backends support
    supported: str       # those dtypes, in words, for the error message
    torch: str           # the test oracle: Tensor.scatter_reduce_'s reduce= name


ATOMIC_RMW = {a.kind: a for a in (
    AtomicRMW("add", np.add, "tl.atomic_add", _add_dtypes, "fp16/bf16/fp32/fp64 and 32/64-bit ints", "sum"),
)}


def c_spelling(template: str, operands: dict, math_name, literal) -> str:
    """Fill a C spelling: operands by name, ``{lit_K}`` through ``literal(K)``, other names through
    ``math_name`` (the dialect's math function names)."""
    class Fill(dict):
        def __missing__(self, key):
            if key.startswith("lit_"):
                return literal(float(key[4:]))
            return math_name(key)
    return template.format_map(Fill(operands))


__all__ = ["Trait", "IR_OPS", "has", "MEMORY_OPS", "ELEMENTWISE_OPS", "UNARY", "FLOAT_ONLY_UNARY",
           "UNARY_BUILTINS", "BINARY", "COMPARE", "REDUCE", "ATOMIC_RMW", "c_spelling"]
