"""The autotuner (``tilekit tune``, docs/tune.md).

``protocol``: what an op kernel declares to be tuned (``TuneKernel``); ``tuner``: the Optuna driver;
``worker``: the isolated trial processes (compile, correctness gate, timing under the device lock);
``table``: the per-device dispatch table (JSON, file-locked, atomic); ``lookup``: the runtime config
provider that ``import tilekit.ops`` installs; ``device``: device fingerprints; ``cli``: ``tune``/``cache``.
"""
