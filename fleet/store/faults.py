"""Store faults: which failures are a passing state, and how an outage is told.

A full disk, a read-only database, an I/O error, a database that cannot be
opened or a lock held past the busy timeout are not bugs in fleet: they are
states of the host that pass (space is freed, the file is made writable
again).  :func:`unavailable` turns the SQLite (and file) errors that mean one
of them into :class:`~fleet.errors.StoreUnavailable`, which names the cause;
the API answers it with 503, and every loop that writes (workers, pools, the
manager's supervision, the schedule driver, the metrics sampler) catches it,
waits with a :class:`Backoff` and tries again.  Other SQLite errors (a typo
in SQL, a constraint) stay what they are: bugs.

:class:`Outage` is one process's memory of an episode, kept by the store's
connections: the first failure is logged once, with its cause, later ones
are only counted, and the end is logged once with how long it lasted and how
many operations failed, so a full disk makes two lines in each log, not one
per heartbeat.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fleet.core.errors import StoreUnavailable

log = logging.getLogger(__name__)

DISK_FULL = "disk full"
READ_ONLY = "database is read-only"
IO_ERROR = "disk I/O error"

# SQLite's primary result codes (the low byte of an extended code)
_BY_CODE = {
    5: "database is locked",  # SQLITE_BUSY, past the busy timeout
    6: "database is locked",  # SQLITE_LOCKED
    8: READ_ONLY,  # SQLITE_READONLY
    10: IO_ERROR,  # SQLITE_IOERR
    13: DISK_FULL,  # SQLITE_FULL
    14: "cannot open the database",  # SQLITE_CANTOPEN
}
# Python 3.10 has no sqlite_errorcode: SQLite's messages for the same codes
_BY_MESSAGE = (
    ("database or disk is full", DISK_FULL),
    ("readonly database", READ_ONLY),
    ("disk i/o error", IO_ERROR),
    ("unable to open database", "cannot open the database"),
    ("database is locked", "database is locked"),
    ("database table is locked", "database is locked"),
)
_BY_ERRNO = {
    errno.ENOSPC: DISK_FULL,
    errno.EDQUOT: DISK_FULL,
    errno.EROFS: READ_ONLY,
    errno.EACCES: READ_ONLY,
    errno.EPERM: READ_ONLY,
    errno.EIO: IO_ERROR,
}

QUIET_S = 10.0  # an outage is over once a write lands this long after its last failure


def _disk_full(path: Path) -> bool:
    try:
        return os.statvfs(path.parent).f_bavail == 0
    except OSError:
        return False


def unavailable(exc: BaseException, path: Path) -> StoreUnavailable | None:
    """The :class:`StoreUnavailable` that ``exc`` means, or None when it is
    not a passing state (a bug, a corrupt file).  ``path`` is the database:
    an I/O error on a file system with no space left is a full disk."""
    cause: str | None = None
    detail = ""
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int):
            cause = _BY_CODE.get(code & 0xFF)
        if cause is None:
            text = str(exc).lower()
            cause = next((c for m, c in _BY_MESSAGE if m in text), None)
        detail = str(exc)
    elif isinstance(exc, OSError) and exc.errno is not None:
        cause = _BY_ERRNO.get(exc.errno)
        detail = exc.strerror or str(exc)
    if cause is None:
        return None
    if cause == IO_ERROR and _disk_full(path):
        cause = DISK_FULL
    return StoreUnavailable(cause, detail)


class Outage:
    """One process's view of whether its store takes writes (thread-safe)."""

    def __init__(self, path: Path | str, name: str = "store", clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.name = name  # whose connections: "store", "metrics"
        self.clock = clock
        self._lock = threading.Lock()
        self.since: float | None = None  # when the current episode began
        self.last_failure = 0.0
        self.failures = 0
        self.episodes = 0

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: StoreUnavailable) -> None:
        with self._lock:
            now = self.clock()
            self.last_failure = now
            self.failures += 1
            if self.since is not None:
                return
            self.since = now
            self.episodes += 1
        log.warning("%s %s: %s; retrying with back-off until it takes writes again", self.name, self.path, exc.message)

    def wrote(self) -> None:
        """A write was committed: the episode ends once no failure came for ``QUIET_S``."""
        if self.since is None:
            return
        with self._lock:
            now = self.clock()
            if self.since is None or now - self.last_failure < QUIET_S:
                return
            lasted, failures = now - self.since, self.failures
            self.since = None
            self.failures = 0
        log.warning(
            "%s %s: takes writes again after %.1fs (%d operations failed)", self.name, self.path, lasted, failures
        )


class Backoff:
    """When a loop tries the store again: ``first`` seconds after a failure,
    doubling up to ``cap``; a success resets it."""

    def __init__(self, first: float = 0.5, cap: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.first = first
        self.cap = cap
        self.clock = clock
        self.delay = first
        self.until = 0.0

    def ready(self) -> bool:
        return self.clock() >= self.until

    def remaining(self) -> float:
        """Seconds until the next try (0 when due)."""
        return max(0.0, self.until - self.clock())

    def failed(self) -> float:
        """Note a failure; return how long to wait before the next try."""
        delay = self.delay
        self.until = self.clock() + delay
        self.delay = min(self.delay * 2, self.cap)
        return delay

    def ok(self) -> None:
        self.delay = self.first
        self.until = 0.0
