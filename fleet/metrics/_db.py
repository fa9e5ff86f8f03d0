"""A connection to the fleet database for the metrics package.

Same rules as :class:`fleet.store.sqlite.SQLiteStore`: one connection per
thread, WAL, and writers queue on the ``flock`` of ``<db>.lock`` before
``BEGIN IMMEDIATE`` so that a sampler write never makes a claim wait in
SQLite's sleeping busy handler.  The schema is the store's (version 3 and up);
the store creates and migrates it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from fleet.errors import StoreError

BUSY_TIMEOUT_MS = 60_000
SCHEMA_VERSION = 3  # the migration that made the metrics tables


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    @property
    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
                conn.row_factory = sqlite3.Row
                conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                version = conn.execute("PRAGMA user_version").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"{self.path}: cannot open the database for metrics ({exc})") from exc
            if version < SCHEMA_VERSION:
                conn.close()
                raise StoreError(f"{self.path} has schema version {version}; metrics need {SCHEMA_VERSION} or later")
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, queued on the store's writer lock."""
        conn = self.conn
        fd: int | None = getattr(self._local, "lock_fd", None)
        if fd is None:
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            self._local.lock_fd = fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
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
