"""GPUs held idle for a waiting task (portable SQL; both stores).

A dynamic pool that cannot start the head of a queue holds free GPUs for it
so that smaller tasks behind it do not starve it
(:mod:`fleet.policy.allocate`).  With many hosts on one store, the pools of
every host would hold GPUs for the same task; a row of ``gpu_reservations``
(primary key: the task) makes the first pool to reserve a task its one
holder, and every other pool sees it and serves other requests.

A reservation ends:

- when its task leaves the queue (claimed, aborted, dequeued, its queue
  deleted): in the transition function, in the same transaction
  (:meth:`fleet.store.sqlite_base.SQLiteBase._move_task`);
- when its pool reserves for another task (a pool holds one at a time) or
  holds none any more (:meth:`SQLiteReservations.drop_reservations`);
- when its pool becomes ``dead`` (:func:`fleet.store.sqlite_workers.move_worker`);
- when its host is lost: whoever declares a host lost calls
  ``drop_reservations(host=NAME, ...)``.

Reads leave out a reservation whose task is no longer queued or whose pool is
dead or lost, so a row left behind by a crash never holds anyone off.
Every reservation made or ended (other than by its task's start, which the
task's own event records) is an event of kind ``reservation`` whose subject
is the task.

Atomicity: a reservation is one transaction that locks the task's row (a
claim of the task waits for it, and vice versa) and takes the reservations'
lock (:meth:`fleet.store.sqlite_base.SQLiteBase._lock_reservations`: SQLite's
one writer; a PostgreSQL advisory lock), then inserts with ``ON CONFLICT
(task_id) DO NOTHING``: of any number of pools reserving one task at once,
exactly one holds it.
"""

from __future__ import annotations

import time
from typing import Any

from fleet.core.models import GpuReservation, TaskStatus, Worker
from fleet.store.dbapi import DbConn
from fleet.store.rows import dumps, to_reservation
from fleet.store.sqlite_base import SQLiteBase

# states of a worker whose reservations count for nothing (``lost``: a lost host's)
GONE_STATES = ("dead", "lost")
_LIVE = (
    "JOIN tasks t ON t.id = r.task_id AND t.status = 'queued'"
    f" JOIN workers w ON w.id = r.worker AND w.state NOT IN ({', '.join(repr(s) for s in GONE_STATES)})"
)


def end_reservations(conn: DbConn, where: str, params: tuple[Any, ...], actor: str, reason: str) -> int:
    """Delete the reservations ``where`` selects (inside the caller's
    transaction), each with its event; how many there were."""
    rows = conn.execute(f"SELECT task_id, worker FROM gpu_reservations WHERE {where}", params).fetchall()
    for task_id, worker in rows:
        conn.execute("DELETE FROM gpu_reservations WHERE task_id = ?", (task_id,))
        SQLiteBase._event(conn, "reservation", task_id, worker, "released", actor, reason)
    return len(rows)


class SQLiteReservations(SQLiteBase):
    """Mixed into :class:`fleet.store.sqlite.SQLiteStore` and :class:`fleet.store.postgres.PostgresStore`."""

    def reserve_gpus(self, worker: Worker, task_id: str, need: int, gpus: list[int]) -> GpuReservation | None:
        """Make ``worker``'s one reservation the one for ``task_id`` (holding
        ``gpus``, the free ones now, of ``need``), in one transaction; its
        reservation of any other task ends.  The first pool to reserve a task
        holds it: returns the task's reservation, ``worker``'s or, when
        another live pool holds it already, that pool's (``worker`` then holds
        none).  None when the task is no longer queued."""
        actor = f"worker:{worker.id}"
        with self._tx() as conn:
            self._lock_reservations(conn)
            task = conn.execute("SELECT status FROM tasks WHERE id = ?" + self._for_update(conn), (task_id,)).fetchone()
            end_reservations(
                conn, "worker = ? AND task_id != ?", (worker.id, task_id), actor, "reserving for another task"
            )
            if task is None or task[0] != TaskStatus.QUEUED.value:
                return None
            found = conn.execute(
                "SELECT r.*, w.state AS holder_state FROM gpu_reservations r"
                " LEFT JOIN workers w ON w.id = r.worker WHERE r.task_id = ?",
                (task_id,),
            ).fetchone()
            if found is not None and found["worker"] != worker.id and found["holder_state"] not in (None, *GONE_STATES):
                return to_reservation(dict(found))  # another pool holds it
            if found is not None and found["worker"] != worker.id:  # its pool is gone: the task is free to reserve
                end_reservations(conn, "task_id = ?", (task_id,), actor, f"its pool {found['worker']} is gone")
            now = time.time()
            conn.execute(
                "INSERT INTO gpu_reservations (task_id, worker, host, need, gpus, at) VALUES (?,?,?,?,?,?)"
                " ON CONFLICT (task_id) DO UPDATE SET need = excluded.need, gpus = excluded.gpus"
                " WHERE gpu_reservations.worker = excluded.worker",
                (task_id, worker.id, worker.host, need, dumps(list(gpus)), now),
            )
            if found is None or found["worker"] != worker.id:
                why = f"holds {len(gpus)} GPU(s) on {worker.host} for a task needing {need}"
                self._event(conn, "reservation", task_id, None, worker.id, actor, why)
            row = conn.execute("SELECT * FROM gpu_reservations WHERE task_id = ?", (task_id,)).fetchone()
            return to_reservation(dict(row))

    def drop_reservations(self, *, worker: str | None = None, host: str | None = None, actor: str, reason: str) -> int:
        """End the reservations of a pool (``worker``) or of every pool of a
        host (``host``: a lost host's); how many ended."""
        if (worker is None) == (host is None):
            raise ValueError("give worker or host")
        column, value = ("worker", worker) if worker is not None else ("host", host)
        if self.conn.execute(f"SELECT 1 FROM gpu_reservations WHERE {column} = ? LIMIT 1", (value,)).fetchone() is None:
            return 0  # the common case: no write
        with self._tx() as conn:
            self._lock_reservations(conn)
            return end_reservations(conn, f"{column} = ?", (value,), actor, reason)

    def gpu_reservations(self) -> list[GpuReservation]:
        """The reservations in force (their task queued, their pool live), oldest first."""
        rows = self.conn.execute(f"SELECT r.* FROM gpu_reservations r {_LIVE} ORDER BY r.at, r.task_id").fetchall()
        return [to_reservation(dict(r)) for r in rows]
