"""Connections to the SQLite file: one per thread, and the writers' queue.

Shared by the store and by the metrics package, which writes samples to the
same file.  Each thread gets its own connection (WAL, ``synchronous=NORMAL``,
a long busy timeout).  Writers queue on an ``flock`` of ``<db>.lock`` before
taking SQLite's write lock: the kernel wakes the next writer the moment the
lock is free, where SQLite's own busy handler sleeps in steps of up to 100 ms
and would cap a busy host at a few dozen transactions a second.

Every statement runs through :class:`_Connection`, which turns the errors
that are a passing state (disk full, read-only, I/O error: see
:mod:`fleet.store.faults`) into :class:`~fleet.errors.StoreUnavailable` and
tells this process's :class:`~fleet.store.faults.Outage`.  A transaction that
fails that way is rolled back (if SQLite has not already done so) and leaves
the database as it was; after an I/O error or a read-only answer the thread's
connection is opened afresh on its next use (a connection opened on a
read-only file stays read-only).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fleet.core.errors import StoreError, StoreUnavailable
from fleet.store.faults import IO_ERROR, READ_ONLY, Outage, unavailable

BUSY_TIMEOUT_MS = 60_000


class _Connection(sqlite3.Connection):
    """A connection whose statements raise StoreUnavailable for store faults."""

    on_fault: Callable[[BaseException], StoreUnavailable | None] | None = None

    def _check(self, exc: sqlite3.OperationalError) -> StoreUnavailable | None:
        return self.on_fault(exc) if self.on_fault is not None else None

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.OperationalError as exc:
            fault = self._check(exc)
            if fault is None:
                raise
            raise fault from exc

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        try:
            return super().executemany(sql, parameters)
        except sqlite3.OperationalError as exc:
            fault = self._check(exc)
            if fault is None:
                raise
            raise fault from exc


class Connections:
    def __init__(self, path: Path, name: str = "store") -> None:
        self.path = path
        self.outage = Outage(path, name)
        self._local = threading.local()

    def fault(self, exc: BaseException) -> StoreUnavailable | None:
        """The StoreUnavailable ``exc`` means (told to the outage), or None."""
        found = unavailable(exc, self.path)
        if found is not None:
            self.outage.failed(found)
            if found.cause in (IO_ERROR, READ_ONLY):  # such a connection stays so: open it afresh
                self._local.stale = True
        return found

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, factory=_Connection)
        except sqlite3.DatabaseError as exc:
            raise self._refused(exc) from exc
        try:
            conn.on_fault = self.fault
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{self.path}: cannot switch the database to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except (sqlite3.DatabaseError, StoreError) as exc:
            conn.close()
            if isinstance(exc, StoreError):
                raise
            raise self._refused(exc) from exc
        return conn

    def _refused(self, exc: sqlite3.DatabaseError) -> StoreError:
        """A passing state (StoreUnavailable), else a file that is no fleet database."""
        fault = self.fault(exc)
        if fault is not None:
            return fault
        return StoreError(f"{self.path} is not a usable fleet database ({exc}); it was left untouched")

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (opened afresh after an I/O error)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "stale", False):
            self._local.conn = None
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            conn = None
        if conn is None:
            self._local.stale = False
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _writer_lock(self) -> int:
        fd: int | None = getattr(self._local, "lock_fd", None)
        if fd is None:
            try:
                fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                fault = self.fault(exc)
                if fault is None:
                    raise
                raise fault from exc
            self._local.lock_fd = fd
        return fd

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``), queued on the writers' lock."""
        conn = self.conn
        fd = self._writer_lock()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            changes = conn.total_changes
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (a full disk, an I/O error)
                    with contextlib.suppress(sqlite3.Error, StoreUnavailable):
                        conn.execute("ROLLBACK")
                raise
            if conn.total_changes != changes:
                self.outage.wrote()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close this thread's connection and lock file."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        fd = getattr(self._local, "lock_fd", None)
        if fd is not None:
            os.close(fd)
            self._local.lock_fd = None
