"""Finding problems and matching candidates, without executing any of their code.

A problem is a KernelBench-format Python file: ``class Model(nn.Module)``, ``get_inputs()`` and
``get_init_inputs()``. tilekit's own problems add two optional module-level literals:

* ``VARIANTS`` — a dict ``name -> {global: value, ..., "quick": {...}}``; each variant is one
  benchmark case (one row of the table);
* ``QUICK`` — a dict of module globals (sizes) to override for the small ``--quick`` size.

Overrides apply in this order: the variant, then QUICK (quick mode), then the variant's own
``"quick"`` dict (quick mode).

Everything here reads files through ``ast`` only, so listing a directory never runs user code.
"""
from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
TILEKIT_PROBLEMS_DIR = BENCH_DIR / "problems"
TILEKIT_CANDIDATES_DIR = BENCH_DIR / "candidates"

REQUIRED_PROBLEM_NAMES = ("Model", "get_inputs", "get_init_inputs")


class BenchInputError(ValueError):
    """Bad user input (a missing directory, a malformed problem file); the message names it."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """One benchmark case: a problem file, optionally one of its variants."""

    path: Path
    family: str
    name: str                 # the file's stem
    variant: str | None = None

    @property
    def id(self) -> str:
        base = f"{self.family}/{self.name}"
        return f"{base}[{self.variant}]" if self.variant else base


def _module_top_level(path: Path) -> ast.Module:
    try:
        source = path.read_text()
    except OSError as exc:
        raise BenchInputError(f"cannot read problem file {path}: {exc}") from None
    try:
        return ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise BenchInputError(f"problem file {path} does not parse: line {exc.lineno}: {exc.msg}") from None


def defined_names(tree: ast.Module) -> set[str]:
    """Classes, functions and simple assignments at a module's top level."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def module_literal(tree: ast.Module, name: str, path: Path):
    """The value of a top-level ``name = <literal>``, or None when absent."""
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else [])
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                raise BenchInputError(
                    f"{path}: {name} must be a literal (dicts of numbers, strings and booleans; "
                    f"write dtypes as strings such as 'float16')") from None
    return None


def variant_names(tree: ast.Module, path: Path) -> list[str | None]:
    variants = module_literal(tree, "VARIANTS", path)
    if variants is None:
        return [None]
    if not isinstance(variants, dict) or not variants or not all(isinstance(v, dict) for v in variants.values()):
        raise BenchInputError(f"{path}: VARIANTS must be a non-empty dict of name -> dict of overrides")
    return list(variants)


def missing_problem_names(path: Path) -> list[str]:
    names = defined_names(_module_top_level(path))
    return [n for n in REQUIRED_PROBLEM_NAMES if n not in names]


def load_problem_file(path: Path, family: str) -> list[Problem]:
    """All benchmark cases of one problem file; raises naming what the file lacks."""
    tree = _module_top_level(path)
    missing = [n for n in REQUIRED_PROBLEM_NAMES if n not in defined_names(tree)]
    if missing:
        raise BenchInputError(f"problem file {path} is not in KernelBench format: it defines no "
                              + ", ".join(missing))
    return [Problem(path=path, family=family, name=path.stem, variant=v) for v in variant_names(tree, path)]


def natural_key(path: Path) -> tuple:
    """Numbers compare as numbers: 1_x, 2_x, 10_x (KernelBench's file names), not 1_x, 10_x, 2_x."""
    return tuple(tuple((0, int(chunk), "") if chunk.isdigit() else (1, 0, chunk.lower())
                       for chunk in re.findall(r"\d+|\D+", part)) for part in path.parts)


def _python_files(directory: Path) -> list[Path]:
    return sorted((p for p in directory.rglob("*.py")
                   if not p.name.startswith(("_", ".")) and "__pycache__" not in p.parts), key=natural_key)


def tilekit_families() -> list[str]:
    if not TILEKIT_PROBLEMS_DIR.is_dir():
        return []
    return sorted(p.name for p in TILEKIT_PROBLEMS_DIR.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def discover_problems(spec: str | None, warn=print) -> list[Problem]:
    """Problems named by ``--problems``: a directory, a single file, or tilekit family names.

    ``spec`` may be a comma-separated list of families (``matmul,softmax``). None means all of
    tilekit's own problems. In a directory, ``.py`` files that are not problems (no Model,
    get_inputs and get_init_inputs, or not parsing: helpers, prompt templates) are skipped with a
    note, and files are taken in natural order (1_, 2_, ..., 10_).
    """
    if spec is None:
        return _problems_in_dir(TILEKIT_PROBLEMS_DIR, warn)
    as_path = Path(spec).expanduser()
    if as_path.is_dir():
        return _problems_in_dir(as_path, warn)
    if as_path.is_file():
        if as_path.suffix != ".py":
            raise BenchInputError(f"--problems {spec}: a problem file must be a .py file")
        return load_problem_file(as_path.resolve(), as_path.resolve().parent.name)
    families = tilekit_families()
    problems: list[Problem] = []
    for family in (f.strip() for f in spec.split(",") if f.strip()):
        if family not in families:
            raise BenchInputError(
                f"--problems {spec!r}: {family!r} is neither a directory, a .py file nor a tilekit problem "
                f"family (families: {', '.join(families) or 'none'})")
        problems += _problems_in_dir(TILEKIT_PROBLEMS_DIR / family, warn, family=family)
    return problems


def _problems_in_dir(directory: Path, warn, family: str | None = None) -> list[Problem]:
    directory = directory.resolve()
    problems: list[Problem] = []
    for path in _python_files(directory):
        try:
            missing = missing_problem_names(path)
        except BenchInputError as exc:
            warn(f"note: skipping {path}: not a problem file ({exc})")
            continue
        if missing:
            warn(f"note: skipping {path}: not a problem file (defines no {', '.join(missing)})")
            continue
        rel_parent = path.parent.relative_to(directory)
        fam = family or (rel_parent.name if rel_parent.parts else directory.name)
        problems += load_problem_file(path, fam)
    if not problems:
        raise BenchInputError(f"no KernelBench problem files (defining class Model, get_inputs, "
                              f"get_init_inputs) found in {directory}")
    return problems


_K_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")


def select_problems(problems: list[Problem], expression: str | None) -> list[Problem]:
    """``-k EXPRESSION``, as pytest's: words match case-insensitively as substrings of a problem's
    id (``family/name[variant]``), combined with ``and``, ``or``, ``not`` and parentheses."""
    if not expression or not expression.strip():
        return problems
    tokens = _K_TOKEN.findall(expression)
    position = 0

    def peek():
        return tokens[position] if position < len(tokens) else None

    def take():
        nonlocal position
        position += 1
        return tokens[position - 1]

    def parse_or():
        left = parse_and()
        while peek() == "or":
            take()
            right = parse_and()
            left = (lambda a, b: lambda text: a(text) or b(text))(left, right)
        return left

    def parse_and():
        left = parse_not()
        while peek() == "and":
            take()
            right = parse_not()
            left = (lambda a, b: lambda text: a(text) and b(text))(left, right)
        return left

    def parse_not():
        if peek() == "not":
            take()
            inner = parse_not()
            return lambda text: not inner(text)
        token = take() if peek() is not None else None
        if token == "(":
            inner = parse_or()
            if peek() != ")":
                raise BenchInputError(f"-k {expression!r}: unbalanced parentheses")
            take()
            return inner
        if token is None or token in (")", "and", "or"):
            raise BenchInputError(f"-k {expression!r}: expected a word, got {token or 'the end'}")
        word = token.lower()
        return lambda text: word in text

    matcher = parse_or()
    if position != len(tokens):
        raise BenchInputError(f"-k {expression!r}: unexpected {tokens[position]!r}")
    return [p for p in problems if matcher(p.id.lower())]


def resolve_candidates_dir(spec: str | None) -> Path | None:
    """``--candidates``: 'tilekit' (default) -> bench/candidates, 'none' -> reference only, else a dir."""
    if spec is None or spec == "tilekit":
        return TILEKIT_CANDIDATES_DIR
    if spec == "none":
        return None
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise BenchInputError(f"--candidates {spec!r}: not a directory (or 'tilekit' / 'none')")
    return path.resolve()


def find_candidate(problem: Problem, candidates_dir: Path | None) -> Path | None:
    """The candidate twin of a problem: same family/file name, else the same file name anywhere."""
    if candidates_dir is None:
        return None
    exact = candidates_dir / problem.family / problem.path.name
    if exact.is_file():
        return exact
    flat = candidates_dir / problem.path.name
    if flat.is_file():
        return flat
    matches = sorted(candidates_dir.rglob(problem.path.name))
    return matches[0] if matches else None
