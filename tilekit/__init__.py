"""tilekit: a tile-based Python DSL for GPU kernels."""
__version__ = "0.1.0"
