"""Declared tunables: candidate values per parameter plus a validity rule.

``@tk.kernel(tunables=tk.Tunables({"BM": [64, 128], "num_warps": [4, 8]}, valid=rule))`` — the rule takes a
config dict and returns True, or False / a string saying why the config is invalid (e.g. it exceeds a
shared-memory budget). The autotuner searches ``kernel.tunables``; nothing else reads it.
"""
from __future__ import annotations

import itertools


class Tunables:
    def __init__(self, space: dict, valid=None, default: dict | None = None):
        if not space:
            raise ValueError("Tunables needs at least one parameter")
        for k, vals in space.items():
            if not isinstance(vals, (list, tuple)) or not vals:
                raise ValueError(f"tunable {k!r} needs a non-empty list of candidates, got {vals!r}")
        self.space = {k: list(v) for k, v in space.items()}
        self.rule = valid
        self.default = dict(default) if default else None
        if self.default is not None:
            why = self.why_invalid(self.default)
            if why:
                raise ValueError(f"default tunables {self.default} are invalid: {why}")

    @property
    def names(self):
        return list(self.space)

    def why_invalid(self, config: dict):
        """None if ``config`` is valid, else a reason."""
        for k, v in config.items():
            if k in self.space and v not in self.space[k]:
                return f"{k}={v!r} is not among the candidates {self.space[k]}"
        if self.rule is None:
            return None
        ok = self.rule(config)
        if ok is True or ok is None:
            return None
        return ok if isinstance(ok, str) else f"rejected by the validity rule: {config}"

    def is_valid(self, config: dict) -> bool:
        return self.why_invalid(config) is None

    def configs(self):
        """Every valid combination, in declaration order."""
        keys = list(self.space)
        for combo in itertools.product(*(self.space[k] for k in keys)):
            cfg = dict(zip(keys, combo))
            if self.is_valid(cfg):
                yield cfg

    def __len__(self):
        return sum(1 for _ in self.configs())

    def __repr__(self):
        return f"Tunables({self.space})"
