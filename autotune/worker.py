"""Trial worker processes: a candidate compiles, passes the correctness gate and is timed in a child process,
so that a crash (``os.abort``, a segfault), a hang or running out of memory costs one failed trial and a new
worker, never the tuner.

The parent talks to a worker (``python -m tilekit.autotune.worker``) over its stdin and stdout, one JSON
object a line: it sends a request, and waits at most ``timeout`` seconds for the answer. Timing holds an inter-process lock keyed by the physical device (``device.lock_name``), so
two workers, or two tuners, never time on one device at once.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import statistics
import subprocess
import sys
import time
import traceback

import torch

from .protocol import kernels

L2_FLUSH_BYTES = 256 << 20  # more than any current GPU's L2


# ---- inside the worker --------------------------------------------------------------------------------

def _serve(extra_modules):
    torch.set_num_threads(1)  # the measured kernel, not torch's thread pool, should own the cores
    # Answers go to the real stdout; anything a kernel or library prints goes to stderr instead.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    kernels(extra_modules)
    answers.write(json.dumps({"status": "ready"}) + "\n")  # started and imported: trial timeouts count from here
    answers.flush()
    for line in sys.stdin:
        try:
            answer = run_request(json.loads(line), extra_modules)
        except Exception as e:
            answer = {"status": "error", "reason": f"{type(e).__name__}: {e}",
                      "traceback": traceback.format_exc(limit=8)}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def _compiled(kernel, args, kwargs):
    runtime, constexprs, options = kernel.bind(args, kwargs)
    spec, _ = kernel.specialize(runtime, constexprs, options)
    return kernel.compiled(spec)


def run_request(req, extra_modules=()):
    """Build inputs, launch the candidate, gate it against the reference, time it (under the device lock)."""
    from tilekit.tolerances import PROPERTY
    tk_kernel = kernels(extra_modules)[req["kernel"]]
    dtype = getattr(torch, req["dtype"])
    device = torch.device(req["device"])
    gen = torch.Generator().manual_seed(req.get("seed", 0))
    flags = dict(req.get("flags", {}))
    inputs = tuple(t.to(device) for t in tk_kernel.inputs_for(req["shape"], flags, dtype, gen))
    out = tk_kernel.make_output(inputs).to(device).fill_(float("nan"))
    config = req["config"]
    backend = req["backend"]
    grid, args, kwargs = tk_kernel.launch_args_for(inputs, out, config, flags)
    launch = tk_kernel.kernel[grid]
    hooks = tk_kernel.launch_hooks(inputs, out, config, backend, flags)

    def run():
        """One launch as the op makes it: the hooks' steps (e.g. split-K's zeroing and finish) included."""
        if hooks:
            hooks[0]()
        launch(*args, backend=backend, **kwargs)
        if hooks:
            hooks[1]()

    t0 = time.perf_counter()
    run()  # compile and first run
    compile_s = time.perf_counter() - t0

    expected = tk_kernel.reference_for(inputs, flags)
    atol, rtol = (tk_kernel.tolerances or PROPERTY)[dtype]
    err = (out.double() - expected.double()).abs()
    allowed = atol + rtol * expected.double().abs()
    bad = ~(err <= allowed)  # NaN counts as bad
    if bad.any():
        max_err = err.nan_to_num(float("inf")).max().item()
        return {"status": "wrong", "reason": f"wrong output: max error {max_err:.3g} "
                f"(atol {atol}, rtol {rtol}; {int(bad.sum())} of {bad.numel()} elements over)", "max_error": max_err}
    max_err = err.max().item() if err.numel() else 0.0

    if req.get("gate_only"):
        return {"status": "ok", "max_error": max_err, "compile_s": compile_s}
    timer = _timer(tk_kernel, run, args, kwargs, backend, device, kernel_only=not hooks)
    from filelock import FileLock
    with FileLock(req["timing_lock"]):
        start = time.time()
        times = timer(req["warmup"], req["repeats"])
        # A run far slower than the median means something else ran meanwhile (the lock keeps other tilekit
        # tuners out, not other programs): time it again once and keep the quieter measurement.
        retimed = False
        if max(times) > 3 * statistics.median(times):
            again = timer(1, req["repeats"])
            retimed = True
            if statistics.median(again) < statistics.median(times):
                times = again
        end = time.time()
    return {"status": "ok", "time_s": statistics.median(times), "times": times, "max_error": max_err,
            "compile_s": compile_s, "interval": [start, end], "retimed": retimed, "pid": os.getpid()}


def _timer(tk_kernel, run, args, kwargs, backend, device, kernel_only=True):
    """A function (warmup, repeats) -> [seconds per run], measuring kernel time the way the device allows.
    ``run`` is one launch; where it is more than the kernel (``kernel_only`` False: launch hooks), OpenCL
    times it by the wall clock too, so the extra steps are paid for."""
    if device.type == "cuda":
        flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=device)

        def time_gpu(warmup, repeats):
            for _ in range(warmup):
                run()
            starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
            ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
            for s, e in zip(starts, ends):
                flush.zero_()  # evict the L2, so each run reads its operands from memory
                s.record()
                run()
                e.record()
            torch.cuda.synchronize(device)
            return [s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends)]
        return time_gpu
    if backend == "opencl" and kernel_only:
        compiled = _compiled(tk_kernel.kernel, args, {**kwargs, "backend": backend})

        def time_opencl(warmup, repeats):
            out = []
            for i in range(warmup + repeats):
                run()
                if i >= warmup:  # the kernel's OpenCL profiling event: kernel time, not the copies
                    out.append(compiled.last_timing["kernel_s"])
            return out
        return time_opencl

    def time_wall(warmup, repeats):
        for _ in range(warmup):
            run()
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run()
            out.append(time.perf_counter() - t0)
        return out
    return time_wall


# ---- in the tuner ---------------------------------------------------------------------------------------

class Worker:
    """One worker process; ``run`` starts a new one when the last died or hung."""

    START_TIMEOUT = 300.0  # importing torch on a loaded machine can take long; a trial's timeout excludes it

    def __init__(self, extra_modules=()):
        self.extra_modules = tuple(extra_modules)
        self.process = None
        self.starts = 0

    def _start(self):
        cmd = [sys.executable, "-m", "tilekit.autotune.worker", *self.extra_modules]
        self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        bufsize=1, start_new_session=True)
        self.starts += 1
        answer = self._answer(self.START_TIMEOUT)
        if answer is None or answer.get("status") != "ready":
            self.stop()
            raise RuntimeError(f"a tuning worker did not start: {answer}")

    def _answer(self, timeout):
        with selectors.DefaultSelector() as sel:
            sel.register(self.process.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                return None
        line = self.process.stdout.readline()
        return json.loads(line) if line else {"status": "eof"}

    def run(self, request: dict, timeout: float) -> dict:
        """The answer to ``request``; a hang (no answer within ``timeout`` seconds) or a crash is an answer too."""
        if self.process is None or self.process.poll() is not None:
            self._start()
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._crashed()
        answer = self._answer(timeout)
        if answer is None:
            self.stop()
            return {"status": "hung", "reason": f"hung: no result within the {timeout:g} s trial timeout"}
        if answer.get("status") == "eof":
            return self._crashed()
        return answer

    def _crashed(self):
        code = self.process.wait(10)
        self.process = None
        return {"status": "crashed", "reason": f"the worker process died ({_describe_exit(code)})"}

    def stop(self):
        if self.process is not None:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)  # the worker and whatever it started
            self.process.wait(10)
            for f in (self.process.stdin, self.process.stdout):
                try:
                    f.close()
                except OSError:
                    pass
        self.process = None


def _describe_exit(code):
    if code is None:
        return "no exit status"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


if __name__ == "__main__":
    _serve(sys.argv[1:])
