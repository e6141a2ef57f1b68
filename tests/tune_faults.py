"""An op kernel for the tuner's tests, registered under the tuning protocol as ``faults.scale``.

The DSL kernel is ``Y = X * FACTOR``; the reference is ``2 * X``. The tunable ``mode`` injects a failure
when the candidate is launched in a worker: ``crash`` aborts the process, ``hang`` sleeps past any trial
timeout, ``wrong`` launches with FACTOR=3 (a wrong result), ``invalid`` is refused by the validity rule,
``slow`` sleeps ``SLOW_S`` before an honest launch (for killing a tuner mid-trial). ``ok`` is honest.
"""
import os
import time

import torch

import tilekit as tk
from tilekit.autotune.protocol import TuneKernel, register

SLOW_S = float(os.environ.get("TILEKIT_TEST_SLOW_S", "3"))


def _rule(config):
    return "mode=invalid is refused by the rule" if config["mode"] == "invalid" else True


SCALE_TUNABLES = tk.Tunables({"BLOCK": [16, 32, 64, 128], "mode": ["ok", "crash", "hang", "wrong", "invalid", "slow"]},
                             valid=_rule, default={"BLOCK": 16, "mode": "ok"})


@tk.kernel(tunables=SCALE_TUNABLES)
def scale_kernel(X, Y, BLOCK: tk.constexpr, FACTOR: tk.constexpr):
    start = tk.program_id(0) * BLOCK
    x = tk.load(X, (start,), (BLOCK,))
    tk.store(Y, (start,), x * FACTOR)


def launch_args(inputs, out, config):
    (x,) = inputs
    mode = config["mode"]
    if mode == "crash":
        os.abort()
    if mode == "hang":
        time.sleep(3600)
    if mode == "slow":
        time.sleep(SLOW_S)
    factor = 3.0 if mode == "wrong" else 2.0
    return (tk.cdiv(x.shape[0], config["BLOCK"]),), (x, out), {"BLOCK": config["BLOCK"], "FACTOR": factor}


SCALE = register(TuneKernel(
    id="faults.scale", kernel=scale_kernel, shape_names=("n",),
    make_inputs=lambda shape, dtype, gen: (torch.randn(shape[0], generator=gen).to(dtype),),
    make_output=lambda inputs: torch.empty_like(inputs[0]),
    launch_args=launch_args,
    reference=lambda x: 2 * x,
    default_config=lambda shape, dtype, device: {"BLOCK": 16, "mode": "ok"},
    default_shapes={"cpu": [(100,)], "gpu": [(1 << 20,)]},
))
