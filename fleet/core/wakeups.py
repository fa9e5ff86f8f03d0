"""Wake-ups: how an idle worker hears of new work within milliseconds.

Each worker listens on a unix datagram socket in the home,
``$FLEET_HOME/run/wake/<hash of the worker id>.sock``.  The home and
``run/wake`` are owner-only (0700), so only the manager's user (and root) can
bind, replace or write to it.  (It used to be an abstract-namespace name
derived from the home and the worker id: any local user could bind it first
and make the worker crash-loop.)  A path longer than ``sun_path`` allows (108
bytes) is reached through ``/proc/self/fd/N/`` of the opened folder.

Whoever changes what a worker should do (a task enqueued, an abort, a stop
request) sends it one byte after committing the change.  A lost datagram
costs at most the worker's fallback poll interval; correctness never depends
on delivery, only latency does.  So a name that cannot be taken never stops a
worker: a stale socket (its listener died) is replaced; anything else in the
way (a live listener, something that is not a socket, a folder that is not
ours) leaves the worker on its fallback poll, with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

SUN_PATH_MAX = 107  # bytes of a socket path, without the terminating NUL


def folder(home: Path) -> Path:
    return home / "run" / "wake"


def socket_path(home: Path, worker_id: str) -> Path:
    digest = hashlib.sha1(worker_id.encode()).hexdigest()[:24]
    return folder(home) / f"{digest}.sock"


@contextlib.contextmanager
def _reachable(path: Path) -> Iterator[str]:
    """``path`` as a socket address: itself when short enough, else through
    ``/proc/self/fd`` of its folder (kept open while the address is used)."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _private_folder(path: Path) -> None:
    """Create ``run/wake`` owner-only; refuse one that is not ours or not a folder."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise OSError(errno.EPERM, f"{path} is not a folder of uid {os.geteuid()}")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def _stale(address: str, path: Path) -> bool:
    """A socket file of ours that nobody listens on (its worker died)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(address)
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
    return False


class Listener:
    """The receiving end, owned by one worker process.  When its socket cannot
    be bound it holds an unbound socket that is never readable: the worker's
    ``select`` then simply times out at its poll interval."""

    def __init__(self, home: Path, worker_id: str) -> None:
        self.path: Path | None = socket_path(home, worker_id)
        self._inode = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._bind(self.path)
        except OSError as exc:
            log.warning("worker %s: no wake-up socket (%s); falling back to polling", worker_id, exc.strerror or exc)
            self.path = None
            self.sock.close()
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def _bind(self, path: Path) -> None:
        _private_folder(path.parent)
        with _reachable(path) as address:
            try:
                self.sock.bind(address)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or not _stale(address, path):
                    raise
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                self.sock.bind(address)
        self._inode = os.lstat(path).st_ino

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> int:
        """Read every pending wake-up; return how many there were."""
        count = 0
        while True:
            try:
                self.sock.recv(64)
            except (BlockingIOError, OSError):
                return count
            count += 1

    def close(self) -> None:
        """Close, and remove the socket file if it is still the one we bound."""
        self.sock.close()
        if self.path is not None:
            with contextlib.suppress(OSError):
                if os.lstat(self.path).st_ino == self._inode:
                    os.unlink(self.path)
            self.path = None


def wake(home: Path, worker_ids: list[str]) -> None:
    """Poke each worker; a worker that is not listening is skipped silently."""
    if not worker_ids:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for wid in worker_ids:
            try:
                with _reachable(socket_path(home, wid)) as address:
                    sock.sendto(b"!", address)
            except (ConnectionRefusedError, FileNotFoundError, BlockingIOError):
                pass
            except OSError as exc:
                log.debug("wake %s: %s", wid, exc)
