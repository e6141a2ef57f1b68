"""Trial worker processes: a candidate compiles, passes the correctness gate and is timed in a child process,
so that a crash (``os.abort``, a segfault), a hang or running out of memory costs one failed trial and a new
worker, never the tuner.

The parent talks to a worker (``python -m tilekit.autotune.worker``) over its stdin and stdout, one JSON
object a line: it sends a request; the worker reports each phase as it begins (build, correctness gate, wait
for the device lock, timing) and then answers. The trial timeout bounds the build and gate together and the
timing on its own; the wait for the lock is bounded apart. Timing holds an inter-process lock keyed by the
physical device (``device.lock_name``), so two workers, or two tuners, never time on one device at once.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback

import torch

from .protocol import kernels

L2_FLUSH_BYTES = 256 << 20  # more than any current GPU's L2


# ---- inside the worker --------------------------------------------------------------------------------

def _exit_with_parent(interval_s=1.0):
    """Kill this worker, and whatever it started, once its tuner is gone (reparented: a tuner killed with -9).
    Otherwise a candidate hung under the device lock would keep the lock from every later tuner."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(interval_s)
        if os.getpgid(0) == os.getpid():  # started by Worker: its own session and process group
            os.killpg(os.getpid(), signal.SIGKILL)
        else:
            os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _serve(extra_modules):
    _exit_with_parent()
    torch.set_num_threads(1)  # the measured kernel, not torch's thread pool, should own the cores
    # Answers go to the real stdout; anything a kernel or library prints goes to stderr instead.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    kernels(extra_modules)
    answers.write(json.dumps({"status": "ready"}) + "\n")  # started and imported: trial timeouts count from here
    answers.flush()

    def report(phase):
        answers.write(json.dumps({"status": "phase", "phase": phase}) + "\n")
        answers.flush()

    for line in sys.stdin:
        try:
            answer = run_request(json.loads(line), extra_modules, report)
        except Exception as e:
            answer = {"status": "error", "reason": f"{type(e).__name__}: {e}",
                      "traceback": traceback.format_exc(limit=8)}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def _compiled(kernel, args, kwargs):
    runtime, constexprs, options = kernel.bind(args, kwargs)
    spec, _ = kernel.specialize(runtime, constexprs, options)
    return kernel.compiled(spec)


# The phases a worker reports as it goes, so that a timeout names the one it stopped in, and the wait for the
# device lock (another tuner timing) is not charged to the candidate.
BUILD, GATE, LOCK_WAIT, TIMING = ("build (inputs, compile, first launch)", "correctness gate",
                                  "wait for the device lock", "timing")


def run_request(req, extra_modules=(), report=lambda phase: None):
    """Build inputs, launch the candidate, gate it against the reference, time it (under the device lock).
    ``report(phase)`` is called as each phase after the first (``BUILD``) begins."""
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

    report(GATE)
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
    report(LOCK_WAIT)
    with FileLock(req["timing_lock"]):
        report(TIMING)
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
        self._pending = b""
        self.starts = 0

    def _start(self):
        cmd = [sys.executable, "-m", "tilekit.autotune.worker", *self.extra_modules]
        self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                                        start_new_session=True)
        self._pending = b""
        self.starts += 1
        answer = self._answer(self.START_TIMEOUT)
        if answer is None or answer.get("status") != "ready":
            self.stop()
            raise RuntimeError(f"a tuning worker did not start: {answer}")

    def _answer(self, timeout):
        """The worker's next line, or None after ``timeout`` seconds. Read unbuffered: a buffered reader could
        take two lines at once and leave the second where ``select`` cannot see it."""
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self._pending:
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                if not sel.select(max(0.0, deadline - time.monotonic())):
                    return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return {"status": "eof"}
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return json.loads(line)

    def run(self, request: dict, timeout: float) -> dict:
        """The answer to ``request``; a hang or a crash is an answer too. ``timeout`` bounds the building and
        the gate together, and the timing on its own; the wait for the device lock, which another tuner may
        hold for a whole timing, is bounded by ``lock_wait_timeout(timeout)`` instead."""
        if self.process is None or self.process.poll() is not None:
            self._start()
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
        except (BrokenPipeError, OSError):
            return self._crashed()
        phase, limit = BUILD, timeout
        deadline = time.monotonic() + limit
        while True:
            answer = self._answer(max(0.0, deadline - time.monotonic()))
            if answer is None:
                self.stop()
                return {"status": "hung", "phase": phase,
                        "reason": f"hung in {phase}: no progress within {limit:g} s"}
            if answer.get("status") == "eof":
                return self._crashed()
            if answer.get("status") != "phase":
                return answer
            phase = answer["phase"]
            if phase == LOCK_WAIT:  # the lock wait and the timing each start a bound of their own
                limit = lock_wait_timeout(timeout)
            elif phase == TIMING:
                limit = timeout
            else:
                continue
            deadline = time.monotonic() + limit

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


def lock_wait_timeout(timeout):
    """How long a worker may wait for the device lock: other tuners' timings, each bounded by their own trial
    timeout (a hung holder is killed, which frees the lock), with room for several in the queue."""
    return max(600.0, 10 * timeout)


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
