"""The SQLite store's arrays: many tasks made in one transaction (a sweep),
listed and counted by array, and an array's abort in one transaction.

An array's ``max_running`` is enforced by the claims themselves
(:data:`UNDER_CAP`, a condition every claim query adds): a queued task
whose array already has that many tasks in progress is skipped, inside the
claim's ``BEGIN IMMEDIATE`` transaction, so the cap holds across every
worker and process, and the tasks behind it in the queue are still taken.
"""

from __future__ import annotations

import time
import uuid

from fleet.core.errors import NotFound
from fleet.core.models import ArraySpec, Task, TaskArray, TaskSpec, TaskStatus
from fleet.store.rows import dumps, from_columns, to_task
from fleet.store.sqlite_base import SQLiteBase

# The claim condition: the task is in no array, or its array is not at its cap.  The arrays at
# their cap are found once per query from the tasks in progress (few), not once per queued row.
UNDER_CAP = (
    "(tasks.array_id IS NULL OR tasks.array_id NOT IN (SELECT r.array_id FROM tasks r"
    " JOIN arrays a ON a.id = r.array_id WHERE r.status = 'in_progress' AND a.max_running IS NOT NULL"
    " GROUP BY r.array_id HAVING COUNT(*) >= MIN(a.max_running)))"
)

_INSERT = (
    'INSERT INTO tasks (id, name, status, status_reason, queue, priority, script, env, "user", requirements,'
    " docker, attempt, retries, timeout, gpus_needed, created_at, parent, env_cached, queued_at, seq,"
    " array_id, array_index) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,0,?,?,?,?)"
)
_EVENT = "INSERT INTO events (at, kind, subject, old, new, actor, reason) VALUES (?,?,?,?,?,?,?)"


class SQLiteArrays(SQLiteBase):
    """Mixed into :class:`fleet.store.sqlite.SQLiteStore`."""

    def create_tasks(self, specs: list[tuple[TaskSpec, str | None]], array: ArraySpec | None, actor: str) -> list[str]:
        """Create every ``(spec, queue)`` in one transaction (all or none), queued
        in the order given; with ``array`` they form that array.  Their ids, in order."""
        now = time.time()
        ids = [uuid.uuid4().hex for _ in specs]
        with self._tx() as conn:
            names: dict[str, str] = {}
            for _, queue in specs:
                if queue is not None and queue not in names:
                    names[queue] = self._queue_row(conn, queue)["name"]
            self._lock_queue_order(conn)
            high = conn.execute("SELECT MAX(seq) FROM tasks").fetchone()[0]
            seq = high if high is not None else 0.0
            rows: list[tuple[object, ...]] = []
            events: list[tuple[object, ...]] = []
            for position, (task_id, (spec, queue)) in enumerate(zip(ids, specs, strict=True)):
                qname = names[queue] if queue is not None else None
                seq += 1.0
                status = TaskStatus.QUEUED if qname is not None else TaskStatus.CREATED
                rows.append(
                    (
                        task_id,
                        spec.name or " ".join(spec.script.command)[:80] or task_id,
                        status.value,
                        "",
                        qname,
                        spec.priority,
                        dumps(spec.script.to_json()),
                        dumps(spec.env),
                        spec.user,
                        dumps(spec.requirements.to_json()),
                        dumps(spec.docker.to_json() if spec.docker is not None else {}),
                        0,
                        spec.retries,
                        spec.timeout,
                        spec.gpus,
                        now,
                        spec.parent,
                        now if qname is not None else None,
                        seq if qname is not None else None,
                        array.id if array is not None else None,
                        (spec.array_index if spec.array_index is not None else position) if array else None,
                    )
                )
                events.append((now, "task", task_id, None, TaskStatus.CREATED.value, actor, ""))
                if qname is not None:
                    events.append((now, "task", task_id, TaskStatus.CREATED.value, status.value, actor, ""))
            if array is not None:
                queues = {names[q] if q is not None else None for _, q in specs}
                only = next(iter(queues)) if len(queues) == 1 else None
                conn.execute(
                    'INSERT INTO arrays (id, max_running, created_at, "user", queue, size) VALUES (?,?,?,?,?,?)',
                    (
                        array.id,
                        array.max_running,
                        now,
                        specs[0][0].user if specs else "",
                        only,
                        len(specs),
                    ),
                )
            conn.executemany(_INSERT, rows)
            conn.executemany(_EVENT, events)
        return ids

    def get_array(self, array_id: str) -> TaskArray:
        row = self.conn.execute("SELECT * FROM arrays WHERE id = ?", (array_id,)).fetchone()
        if row is None:
            raise NotFound(f"array {array_id} does not exist", field="array")
        counts = {
            str(status): int(n)
            for status, n in self.conn.execute(
                "SELECT status, COUNT(*) FROM tasks WHERE array_id = ? GROUP BY status", (array_id,)
            )
        }
        return from_columns(TaskArray, row, counts=counts)

    def array_tasks(self, array_id: str, statuses: list[TaskStatus] | None = None) -> list[Task]:
        """The array's tasks in index order (every column; an array is at most a batch's size)."""
        self.get_array(array_id)
        where, params = "array_id = ?", [array_id]
        if statuses:
            where += f" AND status IN ({','.join('?' * len(statuses))})"
            params.extend(s.value for s in statuses)
        sql = f"SELECT * FROM tasks WHERE {where} ORDER BY array_index, created_at, id"
        return [to_task(dict(r)) for r in self.conn.execute(sql, params)]

    def abort_array(self, array_id: str, actor: str, reason: str) -> list[Task]:
        """In one transaction: every queued task of the array stopped, every running
        one flagged for its worker.  The tasks that were changed."""
        self.get_array(array_id)
        changed: list[Task] = []
        now = time.time()
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT * FROM tasks WHERE array_id = ? AND status IN ('queued', 'in_progress')"
                + self._for_update(conn),
                (array_id,),
            ).fetchall()
            for found in rows:
                row = dict(found)
                if row["status"] == TaskStatus.QUEUED.value:
                    self._move_task(conn, row, TaskStatus.STOPPED, actor, reason, finished_at=now)
                else:
                    conn.execute("UPDATE tasks SET abort_requested = ? WHERE id = ?", (reason, row["id"]))
                    self._event(conn, "task", row["id"], row["status"], "abort_requested", actor, reason)
                    row["abort_requested"] = reason
                changed.append(to_task(row))
        return changed
