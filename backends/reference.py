"""The reference backend: the numpy executor of :mod:`tilekit.reference`, on CPU tensors."""
from __future__ import annotations

from ..ir import format_function
from .. import reference
from . import check_launch_device


def available():
    return True, "numpy executor; always available (CPU tensors)"


class CompiledReference:
    def __init__(self, fn):
        self.fn = fn
        self.source = format_function(fn)  # the reference "source" is the IR it runs

    def check_device(self, args, device):
        """Called once per specialization key (the key includes every tensor's device)."""
        check_launch_device("reference", device)

    def launch(self, args, grid):
        reference.run(self.fn, args, grid)


def build(kernel, fn, spec):
    return CompiledReference(fn)


def aot(kernel, fn, spec, target):
    raise ValueError("the reference backend does not compile for GPU targets")
