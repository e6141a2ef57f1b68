"""``--max-elements N``: shrinking a problem that was never written for tilekit.

KernelBench files keep their sizes in module-level integers (``batch_size = 16``, ``dim = 16384``)
next to integers that must not change (``kernel_size``, ``stride``, ``padding``, ``groups``,
``dim`` as a reduction axis). Which integers are sizes is learnt, not guessed: ``get_inputs()`` runs
on the meta device with the tensor factories recording the shapes they make, once as written and
once per module integer with that integer doubled. An integer whose doubling changes a recorded
shape reaches the shape arguments of a factory: it is a size. Everything else is left alone.

The sizes are then scaled down together by one factor until the problem's elements (every tensor
``get_inputs()`` returns plus every output of one forward, both on meta) fit under N, with rules:

* an integer <= 8 is never scaled, and a scaled one never drops below 9;
* every divisibility between module integers that held before still holds (``groups | channels``,
  ``heads | hidden``): a size becomes a multiple of the new values of its divisors;
* ragged sizes stay ragged: a size keeps its power-of-two factor exactly up to 8 (an odd size stays
  odd, 4 * odd stays 4 * odd), and a multiple of 16 stays a multiple of 16;
* ``Model(*get_init_inputs())`` and one forward must still work on meta at the new sizes.

A problem that cannot get under N this way is skipped with a note; it never runs at full size.
"""
from __future__ import annotations

import contextlib
import math

import torch

MIN_SCALED = 9                   # integers <= 8 are never scaled, and a scaled one stays above 8
ALIGN_CAP = 16                   # a multiple of 16 stays a multiple of 16; below that, exactly kept
MIN_FACTOR = 1e-4                # the smallest scale tried
BISECTIONS = 18

FACTORIES = ("randn", "rand", "randint", "randn_like", "rand_like", "randint_like", "zeros", "ones", "empty",
             "full", "zeros_like", "ones_like", "empty_like", "full_like", "arange", "linspace", "logspace",
             "eye", "tensor", "as_tensor", "normal", "randperm", "empty_strided", "bernoulli", "multinomial")


class ShrinkError(Exception):
    """The problem cannot be measured or shrunk; the message says why."""


@contextlib.contextmanager
def recording_factories(shapes: list):
    """Every tensor factory makes meta tensors and appends its result's shape to ``shapes``;
    moving to a device (``.cuda()``, ``.to("cuda")``) stays on meta."""
    saved = {}

    def wrap(original):
        def factory(*args, **kwargs):
            if "device" in kwargs or not original.__name__.endswith("_like"):
                kwargs["device"] = "meta"
            kwargs.pop("pin_memory", None)
            out = original(*args, **kwargs)
            if isinstance(out, torch.Tensor):
                shapes.append(tuple(out.shape))
            return out
        return factory

    def to(self, *args, **kwargs):
        args = tuple(a for a in args if not isinstance(a, (str, torch.device)))
        kwargs.pop("device", None)
        return saved["Tensor.to"](self, *args, **kwargs)

    try:
        for name in FACTORIES:
            if hasattr(torch, name):
                saved[name] = getattr(torch, name)
                setattr(torch, name, wrap(saved[name]))
        for name in ("cuda", "cpu", "pin_memory"):
            saved[f"Tensor.{name}"] = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, lambda self, *a, **k: self)
        saved["Tensor.to"] = torch.Tensor.to
        torch.Tensor.to = to
        yield shapes
    finally:
        for name, original in saved.items():
            if name.startswith("Tensor."):
                setattr(torch.Tensor, name[7:], original)
            else:
                setattr(torch, name, original)


def _flatten(obj) -> list:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _flatten(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _flatten(item)]
    return []


class Problem:
    """A problem module whose integers can be set and whose sizes can be measured on meta."""

    def __init__(self, module):
        self.module = module
        self.original = {name: value for name, value in vars(module).items()
                         if type(value) is int and not name.startswith("__")}

    @contextlib.contextmanager
    def sizes(self, values: dict):
        saved = {name: getattr(self.module, name) for name in values}
        try:
            for name, value in values.items():
                setattr(self.module, name, value)
            yield
        finally:
            for name, value in saved.items():
                setattr(self.module, name, value)

    def factory_shapes(self, values: dict) -> list:
        shapes: list = []
        with self.sizes(values), recording_factories(shapes):
            self.module.get_inputs()
        return shapes

    def measure(self, values: dict, with_forward: bool = True) -> tuple[int, list, str | None]:
        """(elements, input shapes, error of the meta forward or None) at ``values``."""
        shapes: list = []
        with self.sizes(values), recording_factories(shapes):
            inputs = self.module.get_inputs()
            tensors = _flatten(inputs)
            elements = sum(t.numel() for t in tensors)
            error = None
            if with_forward:
                try:
                    with torch.device("meta"), torch.no_grad():
                        model = self.module.Model(*self.module.get_init_inputs())
                        outputs = _flatten(model(*inputs))
                    elements += sum(t.numel() for t in outputs)
                except Exception as exc:  # noqa: BLE001 - reported: data-dependent ops do not run on meta
                    error = f"{type(exc).__name__}: {str(exc)[:200]}"
        return elements, [list(t.shape) for t in tensors], error

    def size_names(self) -> list[str]:
        """Module integers > 8 whose doubling changes a shape that get_inputs() makes."""
        baseline = self.factory_shapes({})
        found = []
        for name, value in self.original.items():
            if value < MIN_SCALED:
                continue
            try:
                changed = self.factory_shapes({name: value * 2}) != baseline
            except Exception:  # noqa: BLE001 - an integer that breaks get_inputs when doubled is left alone
                changed = False
            if changed:
                found.append(name)
        return found


def _two_part(value: int) -> int:
    return value & -value


def _choose(original: int, target: float, step: int, exact_two: int | None, must_divide: list[int]) -> int | None:
    """The largest valid value <= target (else the smallest valid one above it), never above
    ``original``: a multiple of ``step``, with power-of-two part ``exact_two`` when given, dividing
    every number in ``must_divide``."""
    def valid(v):
        return (v >= MIN_SCALED and v % step == 0 and (exact_two is None or _two_part(v) == exact_two)
                and all(d % v == 0 for d in must_divide))
    start = min(original, max(MIN_SCALED, int(target)))
    for v in range(start - start % step, MIN_SCALED - 1, -step):
        if valid(v):
            return v
    for v in range(start - start % step + step, original + 1, step):
        if valid(v):
            return v
    return None


def scaled_values(original: dict, sizes: list[str], factor: float) -> dict | None:
    """New values for ``sizes`` at ``factor`` under the rules in the module docstring, or None."""
    new: dict[str, int] = {}
    for name in sorted(sizes, key=lambda n: (original[n], n)):
        o = original[name]
        twin = next((n for n, v in new.items() if original[n] == o), None)
        if twin is not None:                    # equal sizes divide each other: they stay equal
            new[name] = new[twin]
            continue
        step, must_divide = 1, []
        for other, value in original.items():
            if other == name or value <= 1:
                continue
            if o % value == 0:                  # other | name: name stays a multiple of other's new value
                step = math.lcm(step, new.get(other, value) if other in sizes else value)
            elif value % o == 0 and other not in sizes:
                must_divide.append(value)       # name | a fixed integer: keep dividing it
        two = _two_part(o)
        exact_two = two if two < ALIGN_CAP else None
        step = math.lcm(step, min(two, ALIGN_CAP))
        value = _choose(o, o * factor, step, exact_two, must_divide)
        if value is None:
            return None
        new[name] = value
    return new


def divisibility_kept(original: dict, new: dict) -> bool:
    after = {**original, **new}
    return all(after[b] % after[a] == 0 for a in original for b in original
               if a != b and original[a] > 1 and original[b] % original[a] == 0)


def plan(module, max_elements: int) -> dict:
    """How to run ``module`` under ``max_elements``: ``{"scaled": {name: [old, new]}, "elements":
    [before, after], "input_shapes": [...], "note": str}``. Raises ShrinkError when it cannot."""
    problem = Problem(module)
    try:
        elements, shapes, forward_error = problem.measure({})
    except Exception as exc:  # noqa: BLE001
        raise ShrinkError(f"get_inputs() does not run on the meta device ({type(exc).__name__}: "
                          f"{str(exc)[:200]}), so its size cannot be measured") from None
    result = {"scaled": {}, "elements": [elements, elements], "input_shapes": shapes, "note": ""}
    if forward_error:
        result["note"] = f"outputs not counted (the forward does not run on meta: {forward_error})"
    if elements <= max_elements:
        return result
    sizes = problem.size_names()
    if not sizes:
        raise ShrinkError(f"{elements} elements > --max-elements {max_elements}, and no module-level "
                          "integer > 8 reaches the shapes get_inputs() makes")
    # Bisect the factor (geometrically): the largest sizes that fit, in a few meta measurements.
    cache: dict = {}

    def attempt(factor: float):
        values = scaled_values(problem.original, sizes, factor)
        if values is None or not divisibility_kept(problem.original, values):
            return None
        key = tuple(sorted(values.items()))
        if key not in cache:
            try:
                n, shapes, error = problem.measure(values, with_forward=forward_error is None)
                cache[key] = None if error is not None else (n, values, shapes)   # the model must still run
            except Exception:  # noqa: BLE001 - these sizes break get_inputs
                cache[key] = None
        return cache[key]

    low, high, fitting, best = MIN_FACTOR, 1.0, None, None
    for _ in range(BISECTIONS):
        middle = math.sqrt(low * high)
        found = attempt(middle)
        if found is not None and (best is None or found[0] < best[0]):
            best = found
        if found is not None and found[0] <= max_elements:
            fitting, low = found, middle
        else:
            high = middle
    if fitting is None:
        found = attempt(MIN_FACTOR)
        fitting = found if found is not None and found[0] <= max_elements else None
    if fitting is not None:
        n, values, shapes = fitting
        result.update(scaled={k: [problem.original[k], v] for k, v in values.items() if v != problem.original[k]},
                      elements=[elements, n], input_shapes=shapes)
        return result
    smallest = f" (the smallest valid sizes give {best[0]} elements)" if best else ""
    raise ShrinkError(f"{elements} elements cannot be shrunk below --max-elements {max_elements}{smallest}")
