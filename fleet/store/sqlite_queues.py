"""The store's queues: create, read with their counts, tag, delete (portable SQL)."""

from __future__ import annotations

import time
import uuid

from fleet.core.errors import Conflict
from fleet.core.models import Queue, TaskStatus
from fleet.store.rows import dumps, loads
from fleet.store.sqlite_base import SQLiteBase


class SQLiteQueues(SQLiteBase):
    """Mixed into :class:`fleet.store.sqlite.SQLiteStore` and :class:`fleet.store.postgres.PostgresStore`."""

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
                "SELECT * FROM tasks WHERE queue = ? AND status = 'queued'", (row["name"],)
            ).fetchall():
                why = f"queue {row['name']} deleted"
                self._move_task(conn, dict(task), TaskStatus.CREATED, actor, why, queued_at=None)
            conn.execute("DELETE FROM queues WHERE id = ?", (row["id"],))
            self._event(conn, "queue", row["name"], "created", "deleted", actor, f"{queued} task(s) dequeued")
