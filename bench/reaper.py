"""Killing every process a candidate leaves behind.

A candidate may start processes of its own: a ``sleep`` in its process group, one in a new session
(``setsid``), a double-forked daemon. Killing the candidate's process group misses the last two.
So the process that forks a candidate (the fork server, or ``worker --job``) makes itself a *child
subreaper* (Linux ``prctl(PR_SET_CHILD_SUBREAPER)``): every orphan among the candidate's descendants
is then re-parented to it instead of to init, and once the candidate has exited it kills and reaps
its children until none is left. Nothing the candidate started outlives its job.

Off Linux, or where prctl fails, only the candidate's process group is killed (``subreaper_active``
says which).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36
_MAX_ROUNDS = 1000                # a fork bomb gets this many kill rounds, then whatever is left stays

subreaper_active = False


def become_subreaper() -> bool:
    """Make this process the reaper of its descendants' orphans. True on success (Linux)."""
    global subreaper_active
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        subreaper_active = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        subreaper_active = False
    return subreaper_active


def children(pid: int | None = None) -> list[int]:
    """Live (or zombie) children of ``pid`` (default: this process), read from /proc."""
    pid = os.getpid() if pid is None else pid
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        for tid in tasks:
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                found.update(int(p) for p in handle.read().split())
        return sorted(found)
    except OSError:
        pass
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():   # kernels without .../children
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.add(int(entry))
    return sorted(found)


def _reap_all() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_children() -> int:
    """SIGKILL and reap every child of this process, round after round (each death re-parents the
    dead child's own children here), until none is left. Returns how many were killed.

    Only for processes whose every child is expendable: the fork server between jobs, the
    ``worker --job`` reaper once its job has exited."""
    killed = 0
    for _ in range(_MAX_ROUNDS):
        _reap_all()
        pids = children()
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    return killed


def kill_session(leader: int) -> None:
    """SIGKILL the process group led by ``leader`` and every process still in its session.

    Used by the parent when the fork server itself has died (its children then belong to init)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, signal.SIGKILL)
    if not os.path.isdir("/proc"):
        return
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            if int(fields[4]) == leader:                  # field 6 of stat: the session id
                os.kill(int(entry), signal.SIGKILL)


def run_reaped(target, on_started=None) -> int:
    """Fork a child that starts its own session and runs ``target()``; wait for it; then kill every
    descendant it left. Returns the child's exit code (negative: killed by that signal).

    SIGTERM to this process kills the child and its descendants, then exits with 143."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setsid()
            target()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - reported on stderr, then leave through os._exit
            import traceback
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def terminate(signum, frame):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        kill_children()
        os._exit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        if on_started is not None:
            on_started(pid)
        _, status = os.waitpid(pid, 0)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)            # the rest of the candidate's own group
        kill_children()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return os.waitstatus_to_exitcode(status)
