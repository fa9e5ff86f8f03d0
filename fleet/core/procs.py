"""Process identity and process-group control.

A process is identified by its pid *and* its start, never a pid alone: pids
are reused, and a restarted manager must not adopt or kill a stranger.  The
start is the kernel's own count, never a wall-clock time: the start time in
clock ticks since boot (``/proc/PID/stat`` field 22) plus the boot it belongs
to (``/proc/sys/kernel/random/boot_id``).  Neither moves when the clock is
stepped (NTP, a VM resume), and a pid and tick count seen in an earlier boot
never match a process of this one.  (psutil's ``create_time`` adds the boot
time, which the kernel derives from the wall clock: a 1 s step made a
restarted manager take its live workers for dead.)

Rows written by fleet before this scheme hold a wall-clock start time and no
boot id.  Those are compared the old way, to within 50 ms of psutil's
``create_time``: it is the only evidence such a row has, it holds across an
upgrade (no clock step in between, as a rule), and the alternatives are
worse: treating them as dead would start a second worker beside a live one,
treating them as alive would adopt (and later signal) whatever process now
has the pid.  Every row written by this version carries the boot id, so the
old comparison only ever applies to processes started before the upgrade.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

_STARTTIME = 19  # field 22 of /proc/PID/stat, counted from field 3 (the state), just after the command name


@dataclass(frozen=True)
class Identity:
    """When a process started, in the kernel's terms: clock ticks since boot, and the boot."""

    ticks: int
    boot: str


@functools.cache
def boot_id() -> str:
    """This boot's id; it changes with every boot, never with the clock."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # pragma: no cover - every Linux since 2.6 has it
        return ""


def _stat(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` from field 3 (the state) on; None when there is no such process.

    The command name (field 2) is in parentheses and may itself hold spaces
    and parentheses, so the fields are read after the *last* ``)``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return None
        raise
    fields = text.rpartition(")")[2].split()
    return fields if len(fields) > _STARTTIME else None


def identity(pid: int) -> Identity | None:
    """The identity of the process ``pid`` now, or None when there is none."""
    fields = _stat(pid)
    if fields is None:
        return None
    return Identity(int(fields[_STARTTIME]), boot_id())


def is_same_process(pid: int | None, start: float | None, boot: str | None) -> bool:
    """True when ``pid`` runs (not a zombie) and is the process recorded as
    (``start``, ``boot``); a row without ``boot`` is an old one (see the module
    docstring)."""
    if not pid or pid < 0 or start is None:
        return False
    if boot is None:
        return _same_by_wall_clock(pid, start)
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X", "x"):
        return False
    try:
        return boot == boot_id() and int(fields[_STARTTIME]) == int(start)
    except (ValueError, OverflowError):
        return False


def _same_by_wall_clock(pid: int, started: float) -> bool:
    """The comparison rows from before the boot id were made with."""
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
    """Record this process (pid *and* identity) in ``path``, atomically."""
    pid = os.getpid()
    me = identity(pid)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"pid": pid, "start": me.ticks if me else None, "boot": me.boot if me else None}))
    os.replace(tmp, path)


def pidfile_alive(path: Path) -> bool:
    """True when ``path`` names a process that still runs (same pid and identity)."""
    try:
        data = json.loads(path.read_text())
        pid, started, boot = int(data["pid"]), data["start"], data.get("boot")
        start = float(started) if started is not None else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return is_same_process(pid, start, boot if isinstance(boot, str) else None)


def remove_pidfile(path: Path) -> None:
    """Remove ``path`` if it still names this process (a successor may own it)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(data, dict) and data.get("pid") == os.getpid():
        path.unlink(missing_ok=True)
