"""The user-facing vocabulary: ``tk.load``, ``tk.exp``, ... .

Each builtin is a thin ``Builtin`` whose ``impl`` builds IR through :mod:`tilekit.semantic`. Builtins only
mean something inside ``@tk.kernel`` / ``@tk.func`` code; called on the host they raise, except ``cdiv``.
"""
from __future__ import annotations

from . import semantic as S
from .optable import ATOMIC_RMW, REDUCE, UNARY_BUILTINS


class constexpr:
    """Annotation for compile-time kernel parameters: ``BM: tk.constexpr = 64``."""

    def __init__(self, value=None):
        self.value = value


class Builtin:
    # reads_tensor: the first argument is a tensor parameter the builtin reads or writes (the argument-kind
    # check of launches relies on it: analysis.param_uses).
    __slots__ = ("name", "impl", "host", "reads_tensor", "__doc__")

    def __init__(self, name, impl, host=None, doc=None, reads_tensor=False):
        self.name, self.impl, self.host, self.reads_tensor = name, impl, host, reads_tensor
        self.__doc__ = doc

    def __call__(self, *args, **kwargs):
        if self.host is not None:
            return self.host(*args, **kwargs)
        raise RuntimeError(f"tk.{self.name} can only be used inside a @tk.kernel or @tk.func")

    def __repr__(self):
        return f"<tilekit builtin tk.{self.name}>"


_REGISTRY = {}


def builtin(name=None, host=None, reads_tensor=False):
    def wrap(impl):
        n = name or impl.__name__.lstrip("_")
        b = Builtin(n, impl, host, impl.__doc__, reads_tensor)
        _REGISTRY[n] = b
        globals()[n] = b
        return b
    return wrap


# Special forms: the front end handles these itself because they build regions.
range = Builtin("range", None, doc="tk.range(start, stop, step=1, stages=None, warp_specialize=False): a runtime "
                                   "loop; stages and warp_specialize are hints to Triton's pipeliner.")
static_range = Builtin("static_range", None, doc="tk.static_range(...): a loop unrolled at compile time.")
associative_scan = Builtin("associative_scan", None,
                           doc="tk.associative_scan(values, axis, combine_fn, reverse=False): combine_fn(*left, "
                               "*right), left being the running result; reverse=True scans from the end, as "
                               "flip(scan(flip(values))) (Triton's semantics).")


@builtin()
def program_id(b, axis):
    """Index of this program along grid axis 0, 1 or 2."""
    if axis not in (0, 1, 2):
        raise b.error(f"tk.program_id axis must be 0, 1 or 2, got {axis!r}")
    return b.create("program_id", [], {"axis": axis}).result


@builtin()
def num_programs(b, axis):
    if axis not in (0, 1, 2):
        raise b.error(f"tk.num_programs axis must be 0, 1 or 2, got {axis!r}")
    return b.create("num_programs", [], {"axis": axis}).result


@builtin(reads_tensor=True)
def load(b, tensor, offsets, shape=(), other=0, mask=None):
    """Read a tile of ``shape`` at ``offsets``. Elements outside the tensor read as ``other`` (a constant or a
    runtime scalar). With no shape (or ``shape=()``) it reads one element, a runtime scalar.

    An offset may be a 1-D integer tile (one index per row of the tile): a gather. Gathered indices are
    not masked automatically; pass ``mask=`` for rows that may be out of range.
    """
    return S.load(b, tensor, offsets, shape, other, mask)


@builtin(reads_tensor=True)
def store(b, tensor, offsets, value, mask=None):
    """Write ``value`` at ``offsets``. Elements outside the tensor are not written."""
    S.store(b, tensor, offsets, value, mask)


def _atomic(kind):
    def impl(b, tensor, offsets, value, mask=None):
        S.store(b, tensor, offsets, value, mask, atomic=kind)
    impl.__doc__ = (f"Atomically combine ``value`` into the tensor at ``offsets`` with {kind} (edge-masked like "
                    f"``store``).")
    return builtin(f"atomic_{kind}", reads_tensor=True)(impl)


for _kind in ATOMIC_RMW:  # tk.atomic_add, ...: one per optable.ATOMIC_RMW entry
    _atomic(_kind)


@builtin()
def zeros(b, shape, dtype):
    return S.full(b, shape, 0, dtype)


@builtin()
def full(b, shape, value, dtype):
    return S.full(b, shape, value, dtype)


@builtin()
def arange(b, n):
    """0 … n-1 as an int32 tile (n a power of two)."""
    return S.arange(b, n)


@builtin()
def where(b, cond, x, y):
    return S.where(b, cond, x, y)


def _unary(name):
    def impl(b, x):
        return S.unary(b, name, x)
    impl.__doc__ = f"elementwise {name}"
    return builtin(name)(impl)


for _name in UNARY_BUILTINS:  # tk.exp, tk.floor, ...: one per optable.UNARY entry marked builtin
    _unary(_name)


@builtin()
def maximum(b, x, y):
    if not S.is_value(x) and not S.is_value(y):  # compile-time values (constexprs, literals) fold here
        return x if x >= y else y
    return S.binary(b, "maximum", x, y)


@builtin()
def minimum(b, x, y):
    if not S.is_value(x) and not S.is_value(y):
        return x if x <= y else y
    return S.binary(b, "minimum", x, y)


@builtin()
def fma(b, x, y, z):
    if not S.is_value(x) and not S.is_value(y):
        return x * y + z if not S.is_value(z) else S.binary(b, "add", x * y, z)
    return S.binary(b, "add", S.binary(b, "mul", x, y), z)


def _reduction(kind):
    def impl(b, x, axis=0):
        return S.reduce(b, kind, x, axis)
    impl.__doc__ = f"{kind} over ``axis`` (the axis is removed)"
    return builtin(kind)(impl)


for _kind in REDUCE:  # tk.sum, tk.max, tk.min
    _reduction(_kind)


@builtin()
def cumsum(b, x, axis=0, reverse=False):
    return S.cumsum(b, x, axis, reverse)


@builtin()
def mma(b, a, b_, acc, allow_tf32=False):
    """``acc + a @ b`` with fp32 accumulation for float operands (int32 for integer operands)."""
    return S.mma(b, a, b_, acc, allow_tf32)


@builtin()
def dot(b, a, b_, allow_tf32=False):
    """``a @ b`` with fp32 accumulation."""
    return S.mma(b, a, b_, None, allow_tf32)


@builtin()
def trans(b, x):
    return b.create("trans", [S.to_value(b, x)]).result


@builtin()
def reshape(b, x, shape):
    shape = S.check_tile_shape(b, shape, "tk.reshape")
    return b.create("reshape", [S.to_value(b, x)], {"shape": shape}).result


@builtin()
def broadcast_to(b, x, shape):
    shape = S.check_tile_shape(b, shape, "tk.broadcast_to")
    return S.broadcast_to(b, S.to_value(b, x), shape)


def _cdiv_in_kernel(b, x, y):
    if not S.is_value(x) and not S.is_value(y):
        return cdiv(x, y)
    return S.binary(b, "floordiv", S.binary(b, "sub", S.binary(b, "add", x, y), 1), y)


def cdiv(a, b):
    """Ceiling division, usable in kernels and on the host (grid lambdas)."""
    return -(-a // b)


# A plain function (grid lambdas call it on every launch); the front end finds its kernel meaning here.
cdiv.__tilekit_impl__ = _cdiv_in_kernel


@builtin()
def static_assert(b, cond, msg=""):
    if S.is_value(cond):
        raise b.error("tk.static_assert needs a compile-time condition")
    if not cond:
        raise b.error(f"static_assert failed: {msg}")


def lookup(name):
    return _REGISTRY[name]


def all_builtins() -> dict:
    """Every ``tk.*`` builtin by name."""
    return dict(_REGISTRY)


# What ``from tilekit.language import *`` (and so ``tilekit``) exports: every builtin and special form.
__all__ = sorted(set(_REGISTRY) | {"range", "static_range", "associative_scan", "constexpr", "cdiv"})
