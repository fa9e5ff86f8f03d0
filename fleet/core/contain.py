"""Every process of one task attempt: put them where they can be found, find
them, kill them, and know when none is left.

A process group is not enough: a task's child may call ``setsid`` and leave
it, and when a worker dies (``kill -9``, OOM) between its claim and the write
of the task's pid, nothing in the store names the task's processes.  So each
attempt is contained two ways, both derived from (home, task id, attempt)
alone, which anyone can compute without a pid:

- **cgroup v2**, where fleet may create one (root on most hosts; switched off
  with ``fleet.cgroups: false``): ``<cgroup2 mount>/fleet/<home key>/<task
  id>-<attempt>``.  The worker moves *itself* into the group for the instant
  of the fork, so the task is born inside it (no window in which it runs
  outside, and no ``preexec_fn`` work that a ``setuid`` in the child would
  forbid), then moves back.  Nothing a task does, ``setsid`` and double
  forks included, takes a process out of it; ``cgroup.kill`` (Linux 5.14+)
  kills all of it at once, else every pid in ``cgroup.procs`` is killed
  until none is left.  The group is removed once empty.
- **A marker in the environment**, always: ``FLEET_ATTEMPT=<home key>:<task
  id>:<attempt>``, inherited by every child; ``/proc/PID/environ`` finds
  them.  This catches ``setsid`` too, but not a process that clears its
  environment (``env -i``): on hosts where fleet may not create cgroups, that
  is the limit.

Whoever finds a worker dead (the manager, a pool) calls :meth:`Attempt.end`
*before* it records the task ``failed`` or hands its GPUs to anyone:
SIGKILL, then wait until no process of the attempt exists.  That holds for a
worker killed at any moment, in the middle of the fork too: the child is
born in the cgroup, and carries the marker from its ``exec`` on.

A plain task is started with ``vfork`` (no Python code runs in the child,
so none may: no ``preexec_fn``), which costs a fraction of a full ``fork``
of the worker (measured: 1.4-1.9 against 5.1-5.9 ms of CPU, 4-6.5 against
16-20 ms from the fork to a ``/bin/true``'s end; see README, Performance).
So its main process is not tied to the worker with ``PR_SET_PDEATHSIG``
(:func:`die_with_parent`) any more: that tied only the main process, never
its children, and the cgroup and the marker already find every process of
the attempt.  A task run as its submitter (``fleet.run_as_submitter``) is
forked anyway (``setuid`` rules out ``vfork``) and keeps the tie, and so
does a prepared task, whose preparing step runs in a fork of the worker:
until its ``exec`` the kernel shows that step with the worker's
environment, so the marker cannot find it (the cgroup can, where there is
one); the processes it starts carry the marker.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = "FLEET_ATTEMPT"
PR_SET_PDEATHSIG = 1
END_WAIT_S = 5.0  # how long ending an attempt waits for SIGKILLed processes to go


@functools.lru_cache(maxsize=64)
def home_key(home: Path) -> str:
    """A short, stable name for a home (cgroup folder, marker); computed once
    per home and process (a worker asks for it several times per task)."""
    return hashlib.sha1(str(home.resolve()).encode()).hexdigest()[:16]


@functools.cache
def cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup`` on a pure
    v2 host, ``/sys/fs/cgroup/unified`` on a hybrid one), or None."""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:  # pragma: no cover - Linux has /proc/mounts
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup2":
            return Path(fields[1].replace("\\040", " "))
    return None


def _own_cgroup(mount: Path) -> Path | None:
    """The cgroup v2 folder this process is in now."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return mount / line[3:].lstrip("/")
    except OSError:  # pragma: no cover - Linux has /proc/self/cgroup
        pass
    return None


def _write_self(procs: Path) -> None:
    """Move this process into the cgroup whose ``cgroup.procs`` is ``procs``
    (one ``write`` of "0", no text layer: a worker does it twice per task)."""
    fd = os.open(procs, os.O_WRONLY)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


def _environ_has(pid: int, entry: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return entry in fh.read().split(b"\0")
    except OSError:  # gone, a zombie's empty environ, or someone else's process
        return False


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` that ties the child to its parent (``PR_SET_PDEATHSIG``):
    if the worker dies, even before the child has exec'd, the child gets
    SIGKILL.  It only makes one system call and reads one number, as code
    between ``fork`` and ``exec`` must; the library is loaded here, before the fork."""
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def child() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the worker died before the call above
            os._exit(1)

    return child


@dataclass(frozen=True)
class Attempt:
    """One attempt of one task on this host, and every process it has."""

    home: Path
    task_id: str
    attempt: int

    @property
    def token(self) -> str:
        return f"{home_key(self.home)}:{self.task_id}:{self.attempt}"

    @property
    def marker(self) -> tuple[str, str]:
        """The environment entry every process of the attempt inherits."""
        return MARKER, self.token

    @functools.cached_property
    def cgroup(self) -> Path | None:
        """The attempt's cgroup folder (which may not exist), or None without cgroup v2."""
        mount = cgroup2_mount()
        if mount is None:
            return None
        return mount / "fleet" / home_key(self.home) / f"{self.task_id}-{self.attempt}"

    # -- the worker's side -------------------------------------------------------
    def create_cgroup(self) -> bool:
        """Make the attempt's cgroup; False (and the marker alone) where fleet may not."""
        path = self.cgroup
        if path is None:
            return False
        for _ in range(3):  # another attempt's remove() may take the home's folder away meanwhile
            try:
                path.mkdir(parents=True, exist_ok=True)
                break
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.debug("task %s: no cgroup (%s); its processes are found by their environment", self.task_id, exc)
                return False
        return (path / "cgroup.procs").exists()

    @contextlib.contextmanager
    def inside(self) -> Iterator[bool]:
        """Run the body (a fork) with this process in the attempt's cgroup, so
        the child is born in it; the caller made it with :meth:`create_cgroup`.
        Yields whether this process entered the group (False: the marker alone finds the child)."""
        path, mount = self.cgroup, cgroup2_mount()
        home = _own_cgroup(mount) if mount is not None else None
        back = home / "cgroup.procs" if home is not None else None
        entered = False
        if path is not None and back is not None:
            try:
                _write_self(path / "cgroup.procs")
                entered = True
            except OSError as exc:
                log.warning("task %s: cannot enter its cgroup (%s); its environment marks it", self.task_id, exc)
        try:
            yield entered
        finally:
            if entered and back is not None:
                try:
                    _write_self(back)
                except OSError as exc:
                    log.error("task %s: cannot leave its cgroup: %s", self.task_id, exc)

    # -- anyone's side -----------------------------------------------------------
    def members(self) -> set[int]:
        """Live processes of the attempt: its cgroup's and those with its marker."""
        return self.cgroup_members() | self._marked()

    def cgroup_members(self) -> set[int]:
        """Live processes in the attempt's cgroup (none where it has none)."""
        path = self.cgroup
        if path is None:
            return set()
        try:
            return {int(p) for p in (path / "cgroup.procs").read_text().split()}
        except (OSError, ValueError):
            return set()

    def _marked(self) -> set[int]:
        entry = f"{MARKER}={self.token}".encode()
        me = os.getpid()
        return {int(n) for n in os.listdir("/proc") if n.isdigit() and int(n) != me and _environ_has(int(n), entry)}

    def kill(self) -> None:
        """SIGKILL every process of the attempt."""
        path = self.cgroup
        if path is not None and path.is_dir():
            try:
                (path / "cgroup.kill").write_text("1")
            except FileNotFoundError:  # Linux < 5.14: one by one (end() repeats until none is left)
                for pid in self.cgroup_members():
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            except OSError as exc:
                log.warning("task %s: cgroup.kill: %s", self.task_id, exc)
        entry = f"{MARKER}={self.token}".encode()
        for pid in self._marked():
            _kill_marked(pid, entry)

    def remove(self) -> None:
        """Remove the attempt's (empty) cgroup, and its home's folder once that is empty too."""
        path = self.cgroup
        if path is None:
            return
        for folder in (path, path.parent):
            try:
                folder.rmdir()
            except FileNotFoundError:
                continue
            except OSError:  # not empty: processes left, or other attempts' groups
                return

    def end(self, wait: float = END_WAIT_S) -> bool:
        """SIGKILL every process of the attempt and wait until none is left;
        then remove its cgroup.  False when some still exist after ``wait``
        seconds (stuck in the kernel): the caller must not hand its GPUs on."""
        deadline = time.monotonic() + wait
        pause = 0.002
        while True:
            if not self.members():
                self.remove()
                return True
            if time.monotonic() >= deadline:
                return False
            self.kill()
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


def home_attempts(home: Path) -> set[Attempt]:
    """Every attempt of this home with a process or a cgroup on this machine,
    whatever the store says (a host declared lost kills them all: the store no
    longer names them as this host's)."""
    key = home_key(home)
    found: set[Attempt] = set()
    mount = cgroup2_mount()
    folder = mount / "fleet" / key if mount is not None else None
    if folder is not None and folder.is_dir():
        for group in folder.iterdir():
            task_id, _, attempt = group.name.rpartition("-")
            if task_id and attempt.isdigit():
                found.add(Attempt(home, task_id, int(attempt)))
    prefix = f"{MARKER}={key}:".encode()
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                entries = fh.read().split(b"\0")
        except OSError:
            continue
        for entry in entries:
            if entry.startswith(prefix):
                task_id, _, attempt = entry[len(prefix) :].decode(errors="replace").rpartition(":")
                if task_id and attempt.isdigit():
                    found.add(Attempt(home, task_id, int(attempt)))
    return found


def _kill_marked(pid: int, entry: bytes) -> None:
    """SIGKILL ``pid`` through a pidfd, after checking again that it carries the
    marker: the pid may have been reused since the scan, and the pidfd pins
    the process that was checked."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if _environ_has(pid, entry):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    except OSError as exc:
        if exc.errno not in (errno.ESRCH, errno.EPERM):
            raise
    finally:
        os.close(fd)
