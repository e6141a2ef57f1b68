"""tilekit bench: a KernelBench-format correctness and speed suite (see docs/bench.md).

Kept import-light: worker subprocesses import this package first.
"""
