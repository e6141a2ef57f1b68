"""The reference backend: the numpy executor of :mod:`tilekit.reference`, on CPU tensors."""
from __future__ import annotations

import torch

from ..ir import format_function
from .. import reference


def available():
    return True, "numpy executor; always available (CPU tensors)"


class CompiledReference:
    def __init__(self, fn):
        self.fn = fn
        self.source = format_function(fn)  # the reference "source" is the IR it runs

    def launch(self, args, grid):
        for name, a in args.items():
            t = a.words if hasattr(a, "words") else a
            if isinstance(t, torch.Tensor) and t.device.type != "cpu":
                raise ValueError(f"the reference backend runs on CPU tensors; '{name}' is on {t.device}")
        reference.run(self.fn, args, grid)


def build(kernel, fn, spec):
    return CompiledReference(fn)


def aot(kernel, fn, spec, target):
    raise ValueError("the reference backend does not compile for GPU targets")
