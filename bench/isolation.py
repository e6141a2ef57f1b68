"""Running worker subprocesses with timeouts, and naming what went wrong when they die.

Every worker runs in its own session (process group). A candidate's worker is, in addition, the
subreaper of everything the candidate starts (``bench/reaper.py``): a timeout asks it (SIGTERM) to
kill the candidate and every descendant, even those that left the group with ``setsid``. Workers write their results to files; their stdout/stderr go to a log
whose tail is kept for the report.
"""
from __future__ import annotations

import dataclasses
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tilekit.bench.reaper import kill_session
from tilekit.bench.worker import DONE_MARKER, READY_MARKER

WORKER_MODULE = "tilekit.bench.worker"
LOG_TAIL_CHARS = 2000
STARTUP_ALLOWANCE_S = 120.0     # importing Python and torch, before a worker reports its first stage
POLL_S = 0.05


@dataclasses.dataclass
class ProcessOutcome:
    """How a worker process ended: ``kind`` is "ok", "timeout" or "crash"."""

    kind: str
    returncode: int | None = None
    detail: str = ""
    log_tail: str = ""


def describe_returncode(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (killed: possibly out of memory)" if name == "SIGKILL" else ""
        return f"died with {name}{hint}"
    return f"exited with status {returncode} without writing a result"


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-LOG_TAIL_CHARS:].decode("utf-8", errors="replace")


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the worker's process group: only while the worker, its leader, is alive, so the group
    id cannot have been reused by an unrelated process."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _terminate_reaper(proc: subprocess.Popen) -> None:
    """SIGTERM to a reaping worker: it kills its job child and every descendant, then exits.
    SIGKILL to its group if it does not."""
    if proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, PermissionError):
        pass
    except subprocess.TimeoutExpired:
        _kill_group(proc)


def worker_env() -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONFAULTHANDLER", "1")      # a segfault leaves a Python stack in the log
    return env


def run_job_in_subprocess(job_path: Path, result_path: Path, log_path: Path, timeout_s: float,
                          progress_path: Path | None = None) -> ProcessOutcome:
    """One fresh process for one job (candidates).

    The timeout counts from when the worker reports its first stage (``progress_path`` appears),
    so Python and torch start-up on a busy machine is not charged to the candidate; start-up
    itself gets ``STARTUP_ALLOWANCE_S`` on top."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", WORKER_MODULE, "--job", str(job_path)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, env=worker_env())
        launched = time.monotonic()
        working_since = None
        while True:
            try:
                returncode = proc.wait(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if working_since is None and (progress_path is None or progress_path.exists()):
                working_since = now if progress_path is not None else launched
            deadline = (working_since + timeout_s) if working_since is not None else (
                launched + STARTUP_ALLOWANCE_S + timeout_s)
            if now > deadline:
                _terminate_reaper(proc)
                return ProcessOutcome("timeout", None, f"timed out after {timeout_s:g} s", _tail(log_path))
    if returncode == 0 and result_path.exists():
        return ProcessOutcome("ok", 0, "", _tail(log_path))
    return ProcessOutcome("crash", returncode, describe_returncode(returncode), _tail(log_path))


class WorkerServer:
    """A long-lived worker for trusted jobs (references, torch.compile baselines).

    It saves the cost of importing torch for every problem. If it dies or hangs, the job in
    flight is reported and the next job starts a fresh server.
    """

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.replies: queue.Queue[str | None] = queue.Queue()
        self._log = None
        self._ready = False

    def start(self) -> None:
        """Start importing torch now (it overlaps with other work); jobs wait for it to be ready."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()

    def _start(self) -> None:
        self._log = open(self.log_path, "ab")
        self.replies = queue.Queue()
        self._ready = False
        self.proc = subprocess.Popen([sys.executable, "-m", WORKER_MODULE, "--serve"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     start_new_session=True, env=worker_env(), text=True, bufsize=1)
        threading.Thread(target=self._read_replies, args=(self.proc, self.replies), daemon=True).start()

    def _wait_ready(self) -> bool:
        """Start-up (importing torch) is not charged to the first job's timeout."""
        try:
            return self.replies.get(timeout=STARTUP_ALLOWANCE_S) == READY_MARKER
        except queue.Empty:
            return False

    @staticmethod
    def _read_replies(proc: subprocess.Popen, replies: queue.Queue) -> None:
        for line in proc.stdout:
            replies.put(line.rstrip("\n"))
        replies.put(None)                       # end of stream: the server died

    def run(self, job_path: Path, result_path: Path, timeout_s: float) -> ProcessOutcome:
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        if not self._ready:
            if not self._wait_ready():
                return self._crashed(log_start)
            self._ready = True
        try:
            self.proc.stdin.write(f"{job_path}\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._crashed(log_start)
        try:
            while True:
                reply = self.replies.get(timeout=timeout_s)
                if reply is None:
                    return self._crashed(log_start)
                if reply == f"{DONE_MARKER} {job_path}":
                    return ProcessOutcome("ok", None, "", self._log_since(log_start))
        except queue.Empty:
            self.stop(kill=True)
            return ProcessOutcome("timeout", None, f"timed out after {timeout_s:g} s", self._log_since(log_start))

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                data = log.read()
        except OSError:
            return ""
        return data[-LOG_TAIL_CHARS:].decode("utf-8", errors="replace")

    def _crashed(self, log_start: int) -> ProcessOutcome:
        proc = self.proc
        try:
            returncode = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            returncode = None
        self.stop()
        detail = describe_returncode(returncode) if returncode is not None else "stopped answering"
        return ProcessOutcome("crash", returncode, detail, self._log_since(log_start))

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None:
            if kill:
                _kill_group(self.proc)
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _kill_group(self.proc)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


class ForkServer:
    """Fresh processes for candidates, forked from a server that has already imported torch.

    Each job runs in a newly forked child with its own session and log, so a crash, hang or leak
    stays in that child exactly as with ``run_job_in_subprocess``; only Python's and torch's start-up
    (seconds per candidate) is shared. The server itself never runs candidate code. Linux only.
    """

    START_REPLY_TIMEOUT_S = 120.0

    def __init__(self, log_path: Path, preload_tilekit: bool = False):
        self.log_path = log_path
        self.preload_tilekit = preload_tilekit      # import tilekit's ops once, in the server
        self.proc: subprocess.Popen | None = None
        self.replies: queue.Queue[str | None] = queue.Queue()
        self._log = None

    @staticmethod
    def available() -> bool:
        return sys.platform.startswith("linux") and hasattr(os, "fork")

    def start(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._start()

    def _start(self) -> None:
        self._log = open(self.log_path, "ab")
        self.replies = queue.Queue()
        command = [sys.executable, "-m", WORKER_MODULE, "--forkserver"]
        if self.preload_tilekit:
            command.append("--preload-tilekit")
        self.proc = subprocess.Popen(command,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     start_new_session=True, env=worker_env(), text=True, bufsize=1)
        threading.Thread(target=WorkerServer._read_replies, args=(self.proc, self.replies), daemon=True).start()

    def _next_reply(self, timeout: float) -> str | None:
        """The next protocol line; None when the server died; raises queue.Empty on timeout."""
        while True:
            reply = self.replies.get(timeout=timeout)
            if reply is None or reply.startswith("@@"):
                return reply

    def run(self, job_path: Path, result_path: Path, log_path: Path, timeout_s: float,
            progress_path: Path | None = None) -> ProcessOutcome:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        try:
            self.proc.stdin.write(f"{job_path}\t{log_path}\n")
            self.proc.stdin.flush()
            reply = self._next_reply(self.START_REPLY_TIMEOUT_S)
        except (BrokenPipeError, OSError, queue.Empty):
            reply = None
        if reply is None or not reply.startswith(f"@@started {job_path} "):
            self.stop(kill=True)
            return ProcessOutcome("crash", None, "the fork server failed to start the job", _tail(self.log_path))
        pid = int(reply.rsplit(" ", 1)[1])
        launched = time.monotonic()
        working_since = None
        while True:
            try:
                reply = self._next_reply(POLL_S)
            except queue.Empty:
                reply = ""
            if reply is None:                       # the server died: its child is orphaned; kill it
                kill_session(pid)                   # and all of its session (the server cannot reap them)
                self.stop()
                return ProcessOutcome("crash", None, "the fork server died", _tail(log_path))
            if reply.startswith(f"@@exit {job_path} "):
                returncode = int(reply.rsplit(" ", 1)[1])
                break
            now = time.monotonic()
            if working_since is None and (progress_path is None or progress_path.exists()):
                working_since = now
            deadline = (working_since + timeout_s) if working_since is not None else (
                launched + STARTUP_ALLOWANCE_S + timeout_s)
            if now > deadline:
                self._kill_child(pid)
                try:                                # the server reaps it and reports
                    self._next_reply(10.0)
                except queue.Empty:
                    self.stop(kill=True)
                return ProcessOutcome("timeout", None, f"timed out after {timeout_s:g} s", _tail(log_path))
        if returncode == 0 and result_path.exists():
            return ProcessOutcome("ok", 0, "", _tail(log_path))
        return ProcessOutcome("crash", returncode, describe_returncode(returncode), _tail(log_path))

    @staticmethod
    def _kill_child(pid: int) -> None:
        # The child called setsid(), so its process group id is its pid. It has not been reaped
        # (no @@exit yet), so the id cannot belong to anyone else.
        for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                kill()
                return
            except (ProcessLookupError, PermissionError):
                continue

    def stop(self, kill: bool = False) -> None:
        if kill and self.proc is not None:
            _terminate_reaper(self.proc)            # mid-job, it kills the job's whole tree first
        WorkerServer.stop(self, kill=kill)
