"""Task logs in the store (portable SQL): chunks of bytes, in order, at their offsets.

A task's stored log is the rows of ``log_chunks`` for its id, ordered by
``pos`` (the byte offset of each chunk in the log); each chunk starts where
the one before ends, so the log has no gaps and no overlaps.  Only the
task's running attempt appends, checked in the same transaction as the
append (the task's row is read ``FOR UPDATE`` on PostgreSQL): a host that
lost the task (declared lost, its attempt ended or moved on) cannot write
into the log of the attempt that replaced its own.  Chunks go when their
task does (a trigger in SQLite, ``ON DELETE CASCADE`` in PostgreSQL).

Mixed into :class:`fleet.store.sqlite.SQLiteStore` and
:class:`fleet.store.postgres.PostgresStore`; only the PostgreSQL store is
written to by the workers (:mod:`fleet.worker.logship`).
"""

from __future__ import annotations

import time

from fleet.core.errors import Conflict, NotFound
from fleet.store.dbapi import DbConn
from fleet.store.interface import MAX_LOG_CHUNK, LogSlice
from fleet.store.sqlite_base import SQLiteBase


class SQLiteLogs(SQLiteBase):
    def append_log(self, task_id: str, attempt: int, pos: int, data: bytes) -> int:
        if not data or len(data) > MAX_LOG_CHUNK:
            raise ValueError(f"a log chunk holds 1 to {MAX_LOG_CHUNK} bytes, not {len(data)}")
        with self._tx() as conn:
            row = conn.execute(
                "SELECT status, attempt FROM tasks WHERE id = ?" + self._for_update(conn), (task_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"task {task_id} does not exist", field="task")
            if row["status"] != "in_progress" or row["attempt"] != attempt:
                raise Conflict(
                    f"task {task_id} is not running attempt {attempt} (it is {row['status']} at attempt"
                    f" {row['attempt']}): its log is closed to that attempt",
                    field="attempt",
                )
            end = self._stored_size(conn, task_id)
            if pos < end:
                stored = conn.execute(
                    "SELECT length(data) FROM log_chunks WHERE task_id = ? AND pos = ?", (task_id, pos)
                ).fetchone()
                if stored is not None and stored[0] == len(data):
                    return end  # already stored: a flush tried again
            if pos != end:
                raise Conflict(f"task {task_id}: a log chunk at byte {pos}, but the stored log ends at {end}")
            conn.execute(
                "INSERT INTO log_chunks (task_id, pos, attempt, data, at) VALUES (?,?,?,?,?)",
                (task_id, pos, attempt, data, time.time()),
            )
        return end + len(data)

    def read_log(self, task_id: str, pos: int, limit: int) -> LogSlice:
        # the chunk holding ``pos`` starts at the greatest ``pos`` not past it: both reads use the key
        rows = self.conn.execute(
            "SELECT pos, data FROM log_chunks WHERE task_id = ? AND pos < ?"
            " AND pos >= COALESCE((SELECT MAX(pos) FROM log_chunks WHERE task_id = ? AND pos <= ?), 0)"
            " ORDER BY pos",
            (task_id, pos + max(limit, 1), task_id, pos),
        ).fetchall()
        size = self.log_size(task_id)
        data = b"".join(bytes(r["data"]) for r in rows)
        first = rows[0]["pos"] if rows else pos
        start = max(pos - first, 0)
        return LogSlice(pos, data[start : start + max(limit, 0)] if pos >= first else b"", size)

    def log_size(self, task_id: str) -> int:
        return self._stored_size(self.conn, task_id)

    @staticmethod
    def _stored_size(conn: DbConn, task_id: str) -> int:
        last = conn.execute(
            "SELECT pos + length(data) FROM log_chunks WHERE task_id = ? ORDER BY pos DESC LIMIT 1", (task_id,)
        ).fetchone()
        return int(last[0]) if last is not None else 0
