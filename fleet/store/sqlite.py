"""The SQLite store: one file in WAL mode, shared by the manager and its workers.

Each thread of each process has its own connection.  Writes run in
``BEGIN IMMEDIATE`` transactions, which take SQLite's single write lock up
front, so a claim (select the first queued task, mark it in progress) is
atomic across processes.  ``busy_timeout`` makes a writer wait for the lock
instead of failing.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import sqlite_utils

from fleet.core.errors import StoreError
from fleet.store import schema
from fleet.store.connections import Connections
from fleet.store.interface import Store
from fleet.store.sqlite_gpus import SQLiteGpus
from fleet.store.sqlite_history import SQLiteHistory
from fleet.store.sqlite_queues import SQLiteQueues
from fleet.store.sqlite_tasks import SQLiteTasks
from fleet.store.sqlite_workers import SQLiteWorkers

log = logging.getLogger(__name__)


class SQLiteStore(SQLiteQueues, SQLiteTasks, SQLiteWorkers, SQLiteHistory, SQLiteGpus, Store):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Connections(path)
        self._ignored: set[tuple[str, str, str]] = set()  # unusable stored values already logged
        self._migrate()

    def _migrate(self) -> None:
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as fh:
                if fh.read(16) != b"SQLite format 3\x00":
                    raise StoreError(f"{self.path} is not an SQLite database; refusing to open or overwrite it")
            if self._refuse_newer() == schema.LATEST:
                self.conn  # noqa: B018 - open it now: a file that cannot be opened fails here, at start
                return  # nothing to write, so a full disk or a read-only file does not stop a start
        try:
            with self._db.tx() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > schema.LATEST:
                    raise StoreError(
                        f"{self.path} has schema version {version}, newer than this fleet knows "
                        f"({schema.LATEST}); upgrade fleet. The database was left untouched"
                    )
                db = sqlite_utils.Database(conn)
                for number in range(version, schema.LATEST):
                    schema.MIGRATIONS[number](db)
                    log.info("store %s: migrated schema to version %d", self.path, number + 1)
                if version != schema.LATEST:
                    conn.execute(f"PRAGMA user_version={schema.LATEST}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable fleet database ({exc}); it was left untouched") from exc

    def _refuse_newer(self) -> int:
        """Read the schema version read-only, before anything (WAL included) can change the file."""
        try:
            probe = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                version = probe.execute("PRAGMA user_version").fetchone()[0]
            finally:
                probe.close()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable fleet database ({exc}); it was left untouched") from exc
        if version > schema.LATEST:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this fleet knows "
                f"({schema.LATEST}); upgrade fleet. The database was left untouched"
            )
        return int(version)

    def close(self) -> None:
        self._db.close()
