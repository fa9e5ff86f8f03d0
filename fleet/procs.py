"""Process identity and process-group control.

A process is identified by its pid *and* its start time, never a pid alone:
pids are reused, and a restarted manager must not adopt or kill a stranger.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
from pathlib import Path

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


def write_pidfile(path: Path) -> None:
    """Record this process (pid *and* start time) in ``path``, atomically."""
    pid = os.getpid()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"pid": pid, "start": start_time(pid)}))
    os.replace(tmp, path)


def pidfile_alive(path: Path) -> bool:
    """True when ``path`` names a process that still runs (same pid and start time)."""
    try:
        data = json.loads(path.read_text())
        pid, started = int(data["pid"]), data["start"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return is_same_process(pid, float(started) if started is not None else None)


def remove_pidfile(path: Path) -> None:
    """Remove ``path`` if it still names this process (a successor may own it)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(data, dict) and data.get("pid") == os.getpid():
        path.unlink(missing_ok=True)
