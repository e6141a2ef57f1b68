"""Language objects the front end and the launch layer both know: a function's parsed source
(``SourceInfo``), ``@tk.func`` helpers (``JitFunction``) and the marker of a ``@tk.kernel``.

A leaf module (it imports neither ``frontend`` nor ``kernel``), so the front end and the launch layer
depend on it and not on each other.
"""
from __future__ import annotations

import ast
import inspect
import textwrap

from .errors import CompileError
from .ir import Loc


class SourceInfo:
    """A function's parsed AST plus the mapping back to its file's line numbers."""

    def __init__(self, fn):
        try:
            lines, start = inspect.getsourcelines(fn)
        except (OSError, TypeError) as e:
            raise CompileError(f"cannot read the source of {fn.__qualname__}: {e}. tilekit parses kernel source, "
                               f"so kernels must be defined in a file") from None
        self.filename = inspect.getsourcefile(fn) or "<unknown>"
        self.file_lines = lines
        self.start = start
        self.text = textwrap.dedent("".join(lines))
        tree = ast.parse(self.text)
        self.node = next(n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
        self.globals = fn.__globals__
        self.closure = inspect.getclosurevars(fn).nonlocals if fn.__closure__ else {}

    def loc(self, node) -> Loc:
        lineno = getattr(node, "lineno", 1)
        line = self.file_lines[lineno - 1] if 0 < lineno <= len(self.file_lines) else ""
        return Loc(self.filename, lineno + self.start - 1, line.rstrip("\n"))


class JitFunction:
    """A ``@tk.func`` helper: inlined into the kernels that call it."""

    def __init__(self, fn):
        self.fn = fn
        self.signature = inspect.signature(fn)
        self._info = None
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    def source_info(self):
        if self._info is None:
            self._info = SourceInfo(self.fn)
        return self._info

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"@tk.func {self.fn.__name__} can only be called from inside a @tk.kernel")


def func(fn):
    return JitFunction(fn)


class KernelObject:
    """Base of ``@tk.kernel`` objects and their ``kernel[grid]`` launchers: the front end refuses to call
    one from inside a kernel."""
    __slots__ = ()
