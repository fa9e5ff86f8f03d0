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
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import sqlite_utils

from fleet.core.errors import Conflict, StoreError
from fleet.core.models import Queue, TaskStatus
from fleet.core.notices import Notice
from fleet.store import schema
from fleet.store.connections import Connections
from fleet.store.interface import Store, Subscription
from fleet.store.rows import dumps, loads
from fleet.store.sqlite_base import SQLiteBase
from fleet.store.sqlite_gpus import SQLiteGpus
from fleet.store.sqlite_history import SQLiteHistory
from fleet.store.sqlite_hosts import SQLiteHosts
from fleet.store.sqlite_logs import SQLiteLogs
from fleet.store.sqlite_reservations import SQLiteReservations
from fleet.store.sqlite_tasks import SQLiteTasks
from fleet.store.sqlite_workers import SQLiteWorkers

log = logging.getLogger(__name__)


class SQLiteQueues(SQLiteBase):
    """The queues (portable SQL): create, read with their counts, tag, delete.
    Mixed into :class:`SQLiteStore` and :class:`fleet.store.postgres.PostgresStore`."""

    # -- queues -----------------------------------------------------------------
    def create_queue(self, name: str, tags: list[str], actor: str) -> Queue:
        with self._tx() as conn:
            added = conn.execute(  # one statement: two hosts creating the same queue at once get one queue
                "INSERT INTO queues (id, name, tags, created_at) VALUES (?,?,?,?) ON CONFLICT (name) DO NOTHING",
                (uuid.uuid4().hex, name, dumps(sorted(set(tags))), time.time()),
            )
            if added.rowcount != 1:
                raise Conflict(f"queue {name!r} already exists", field="name")
            self._event(conn, "queue", name, None, "created", actor, "")
        return self.get_queue(name)

    def get_queue(self, name_or_id: str) -> Queue:
        row = self._queue_row(self.conn, name_or_id)
        counts = dict(
            self.conn.execute(
                "SELECT status, COUNT(*) FROM tasks WHERE queue = ? AND status IN ('queued','in_progress') GROUP BY status",
                (row["name"],),
            ).fetchall()
        )
        return Queue(
            id=row["id"],
            name=row["name"],
            tags=loads(row["tags"], []),
            created_at=row["created_at"],
            pending=counts.get("queued", 0),
            running=counts.get("in_progress", 0),
        )

    def list_queues(self) -> list[Queue]:
        counts: dict[tuple[str, str], int] = {
            (r[0], r[1]): r[2]
            for r in self.conn.execute(
                "SELECT queue, status, COUNT(*) FROM tasks WHERE status IN ('queued','in_progress') GROUP BY queue, status"
            )
        }
        return [
            Queue(
                id=r["id"],
                name=r["name"],
                tags=loads(r["tags"], []),
                created_at=r["created_at"],
                pending=counts.get((r["name"], "queued"), 0),
                running=counts.get((r["name"], "in_progress"), 0),
            )
            for r in self.conn.execute("SELECT * FROM queues ORDER BY created_at, name")
        ]

    def set_queue_tags(self, name_or_id: str, tags: list[str], actor: str) -> Queue:
        with self._tx() as conn:
            row = self._queue_row(conn, name_or_id)
            new = sorted(set(tags))
            conn.execute("UPDATE queues SET tags = ? WHERE id = ?", (dumps(new), row["id"]))
            self._event(conn, "queue", row["name"], row["tags"], dumps(new), actor, "tags")
        return self.get_queue(row["name"])

    def delete_queue(self, name_or_id: str, actor: str, force: bool = False) -> None:
        with self._tx() as conn:
            row = self._queue_row(conn, name_or_id)
            queued = conn.execute(
                "SELECT COUNT(*) FROM tasks WHERE queue = ? AND status = 'queued'", (row["name"],)
            ).fetchone()[0]
            if queued and not force:
                raise Conflict(
                    f"queue {row['name']!r} has {queued} queued task(s); dequeue them first or delete with --force (API: force=true)",
                    field="queue",
                )
            for task in conn.execute(
                "SELECT * FROM tasks WHERE queue = ? AND status = 'queued'" + self._for_update(conn), (row["name"],)
            ).fetchall():
                why = f"queue {row['name']} deleted"
                self._move_task(conn, dict(task), TaskStatus.CREATED, actor, why, queued_at=None)
            conn.execute("DELETE FROM queues WHERE id = ?", (row["id"],))
            self._event(conn, "queue", row["name"], "created", "deleted", actor, f"{queued} task(s) dequeued")


HEADER_SIZE = 100
MAGIC = b"SQLite format 3\x00"


def header_problem(head: bytes) -> str | None:
    """What makes ``head``, a file's first :data:`HEADER_SIZE` bytes, no SQLite 3
    database header (https://sqlite.org/fileformat.html#the_database_header);
    None when it is one.

    Checked before SQLite opens the file, even read-only: SQLite itself opens
    (and so creates) a file's ``-wal`` and ``-shm`` as soon as its header says
    WAL (byte 19), before it finds the rest of the header unusable, which would
    leave two new files beside someone else's file."""
    if len(head) < HEADER_SIZE or not head.startswith(MAGIC):
        return "no SQLite 3 header"
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    if not 512 <= page <= 65536 or page & (page - 1):
        return f"page size {page}"
    if head[18] not in (1, 2) or head[19] not in (1, 2):
        return f"file format versions {head[18]}/{head[19]}"
    if head[21:24] != b"\x40\x20\x20":
        return "payload fractions are not 64/32/32"
    return None


class SQLiteStore(
    SQLiteQueues,
    SQLiteTasks,
    SQLiteWorkers,
    SQLiteHistory,
    SQLiteGpus,
    SQLiteReservations,
    SQLiteLogs,
    SQLiteHosts,
    Store,
):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Connections(path)
        self._ignored: set[tuple[str, str, str]] = set()  # unusable stored values already logged
        self._migrate()

    def _migrate(self) -> None:
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as fh:
                problem = header_problem(fh.read(HEADER_SIZE))
            if problem is not None:
                raise StoreError(f"{self.path} is not an SQLite database ({problem}); refusing to open or overwrite it")
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

    def announce(self, notices: Sequence[Notice]) -> None:
        """Nothing: an SQLite store has one host, whose workers the datagram reaches."""

    def subscribe(self) -> Subscription | None:
        return None

    def close(self) -> None:
        self._db.close()

    @property
    def location(self) -> str:
        return str(self.path)
