"""What the parts of the SQLite store share: the connection of this thread,
write transactions, the event record, row lookups and the task transition
function (every task state change goes through :meth:`SQLiteBase._move_task`).

The SQL of the ``sqlite_*`` parts is portable (``?`` placeholders, standard
upserts, ``"user"`` quoted): the PostgreSQL store (:mod:`fleet.store.postgres`)
runs the same methods on its own connections and overrides only what the
dialects do differently (the claims, the schema, a few reads), so both
stores share one transition function and one event record."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from fleet.core.errors import Conflict, Fenced, NotFound, UsageError
from fleet.core.models import ExitUsage, TaskStatus, WorkerState, check_task_move
from fleet.store.connections import Connections
from fleet.store.dbapi import DbConn

log = logging.getLogger(__name__)


class SQLiteBase:
    """The base of :class:`fleet.store.sqlite.SQLiteStore` and its parts."""

    path: Path
    _db: Connections
    _ignored: set[tuple[str, str, str]]  # unusable stored values already logged

    # -- connections and transactions ------------------------------------------
    @property
    def conn(self) -> DbConn:
        return self._db.conn

    def _tx(self) -> contextlib.AbstractContextManager[DbConn]:
        return self._db.tx()

    @staticmethod
    def _event(conn: DbConn, kind: str, subject: str, old: str | None, new: str, actor: str, reason: str) -> None:
        conn.execute(
            "INSERT INTO events (at, kind, subject, old, new, actor, reason) VALUES (?,?,?,?,?,?,?)",
            (time.time(), kind, subject, old, new, actor, reason),
        )

    def _for_update(self, conn: DbConn) -> str:
        """The clause that locks a row read in order to change it: none in SQLite,
        whose one writer (``BEGIN IMMEDIATE``) holds the whole database."""
        return ""

    def _clock(self, conn: DbConn, now: float | None) -> float:
        """The lease clock of hosts (:mod:`fleet.store.sqlite_hosts`): ``now`` when
        given (tests drive it), else this host's clock (SQLite: one host, one clock)."""
        return time.time() if now is None else now

    def _leader(self, conn: DbConn) -> bool:
        """Whether this transaction may declare hosts lost: SQLite's one writer (``BEGIN IMMEDIATE``) is alone."""
        return True

    def _queue_row(self, conn: DbConn, name_or_id: str) -> dict[str, Any]:
        row = conn.execute(
            "SELECT * FROM queues WHERE name = ? OR id = ?" + self._for_update(conn), (name_or_id, name_or_id)
        ).fetchone()
        if row is None:
            raise NotFound(f"queue {name_or_id!r} does not exist", field="queue")
        return dict(row)

    def _task_row(self, conn: DbConn, task_id: str) -> dict[str, Any]:
        row = conn.execute("SELECT * FROM tasks WHERE id = ?" + self._for_update(conn), (task_id,)).fetchone()
        if row is None:
            raise NotFound(f"task {task_id} does not exist", field="task")
        return dict(row)

    def _move_task(
        self,
        conn: DbConn,
        row: dict[str, Any],
        new: TaskStatus,
        actor: str,
        reason: str,
        **fields: Any,
    ) -> None:
        """The one transition function for tasks: check, update, record."""
        old = TaskStatus(row["status"])
        check_task_move(row["id"], old, new)
        fields.update(status=new.value, status_reason=reason)
        columns = ", ".join(f"{k} = ?" for k in fields)
        cur = conn.execute(
            f"UPDATE tasks SET {columns} WHERE id = ? AND status = ?", (*fields.values(), row["id"], old.value)
        )
        if cur.rowcount != 1:  # pragma: no cover - guarded by BEGIN IMMEDIATE (PostgreSQL: the row's lock)
            raise Conflict(f"task {row['id']} changed while being updated")
        row.update(fields)
        self._event(conn, "task", row["id"], old.value, new.value, actor, reason)

    def _end_attempt(
        self,
        conn: DbConn,
        row: dict[str, Any],
        status: TaskStatus,
        exit_code: int | None,
        reason: str,
        actor: str,
        requeue: str | None = None,
        usage: ExitUsage | None = None,
    ) -> None:
        """End the task's current attempt with ``status`` inside the caller's
        transaction (its row read with :meth:`_task_row`), and with ``requeue``
        ("head"/"tail") put it back in its queue: :meth:`finish_task`'s, and a
        lost host's attempts' (:mod:`fleet.store.sqlite_hosts`)."""
        now = time.time()
        self._move_task(conn, row, status, actor, reason, exit_code=exit_code, finished_at=now)
        conn.execute(
            "UPDATE task_attempts SET finished_at = ?, status = ?, exit_code = ?, reason = ?,"
            " peak_rss_mb = ?, cpu_s = ? WHERE task_id = ? AND attempt = ?",
            (
                now,
                status.value,
                exit_code,
                reason,
                usage.peak_rss_mb if usage else None,
                usage.cpu_s if usage else None,
                row["id"],
                row["attempt"],
            ),
        )
        if requeue is None or row["queue"] is None:
            return
        if conn.execute("SELECT 1 FROM queues WHERE name = ?", (row["queue"],)).fetchone():
            why = f"requeued after attempt {row['attempt']}: {reason}"
            self._move_task(
                conn,
                row,
                TaskStatus.QUEUED,
                actor,
                why,
                queued_at=now,
                seq=self._next_seq(conn, row["queue"], requeue == "head"),
                abort_requested=None,
            )

    @staticmethod
    def _check_owner(row: dict[str, Any], attempt: int | None) -> None:
        """Fencing: a runner's write names its attempt, the epoch of its hold on
        the task (attempts only count up: one number, one runner).  Once the
        attempt no longer owns the task (its host was declared lost: the
        attempt ended, and the task may run elsewhere) the write is refused
        with :class:`~fleet.errors.Fenced`, in the transaction that would have
        made it.  None: no check (the manager's and people's own writes)."""
        if attempt is None:
            return
        if row["status"] == TaskStatus.IN_PROGRESS.value and row["attempt"] == attempt:
            return
        raise Fenced(
            f"task {row['id']}: attempt {attempt} no longer owns it (it is {row['status']}, attempt "
            f"{row['attempt']}: {row['status_reason'] or 'no reason given'}); nothing recorded",
            field="task",
        )

    def _worker_lost(self, conn: DbConn, worker_id: str) -> bool:
        """Whether the worker's row is ``lost`` (its host was declared lost): a
        claim for it gets nothing, so the stale copy of a frozen host takes no
        new work before its manager has restarted it."""
        row = conn.execute("SELECT state FROM workers WHERE id = ?", (worker_id,)).fetchone()
        return row is not None and row[0] == WorkerState.LOST.value

    def _lock_queue_order(self, conn: DbConn) -> None:
        """Called in a write transaction before a queue position is read from
        ``MAX(seq)``: SQLite's one writer already orders them (the PostgreSQL
        store takes a lock here)."""

    def _next_seq(self, conn: DbConn, queue: str, head: bool) -> float:
        self._lock_queue_order(conn)
        if head:
            low = conn.execute("SELECT MIN(seq) FROM tasks WHERE queue = ? AND status = 'queued'", (queue,)).fetchone()[
                0
            ]
            return (low if low is not None else 0.0) - 1.0
        high = conn.execute("SELECT MAX(seq) FROM tasks").fetchone()[0]
        return (high if high is not None else 0.0) + 1.0

    def _resolve(self, conn: DbConn, id_or_prefix: str) -> str:
        if len(id_or_prefix) < 4:
            raise UsageError(f"task id {id_or_prefix!r} is too short: give 4 or more characters", field="task")
        if len(id_or_prefix) == 32:
            return id_or_prefix
        rows = conn.execute(
            "SELECT id FROM tasks WHERE id >= ? AND id < ? LIMIT 2", (id_or_prefix, id_or_prefix + "g")
        ).fetchall()
        if not rows:
            raise NotFound(f"task {id_or_prefix} does not exist", field="task")
        if len(rows) > 1:
            raise UsageError(f"task id prefix {id_or_prefix} is ambiguous; give more characters", field="task")
        return str(rows[0][0])

    def _ignore(self, subject: str, what: str, value: str) -> None:
        """A stored value this version cannot use (written by another version,
        or by hand) is left in place and ignored; it is logged once."""
        key = (subject, what, value)
        if key not in self._ignored:
            self._ignored.add(key)
            log.warning("store: %s: %s: %s cannot be used; ignored", subject, what, value)
