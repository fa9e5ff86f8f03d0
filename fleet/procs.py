"""Process identity and process-group control.

A process is identified by its pid *and* its start time, never a pid alone:
pids are reused, and a restarted manager must not adopt or kill a stranger.
"""

from __future__ import annotations

import errno
import logging
import os
import signal

import psutil

log = logging.getLogger(__name__)


def start_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def is_same_process(pid: int | None, started: float | None) -> bool:
    """True when ``pid`` is alive, not a zombie, and started at ``started``."""
    if not pid or started is None:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(proc.create_time() - started) < 0.05
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return False
        raise
    return True


def describe_exit(returncode: int) -> str:
    """Turn a Popen return code into a sentence: ``exit code 3``, ``killed by SIGKILL``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit code {returncode}"


PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process (Linux), so that the
    processes a task leaves behind are reaped here at once instead of lingering
    as zombies until init gets to them."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def reap_orphans(keep: set[int]) -> int:
    """Reap exited children except those in ``keep`` (Popen reaps its own)."""
    reaped = 0
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return reaped
        if info is None or info.si_pid in keep:
            return reaped
        try:
            os.waitpid(info.si_pid, 0)
        except ChildProcessError:
            return reaped
        reaped += 1
