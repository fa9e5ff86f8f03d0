"""The PostgreSQL store's claims, and its task summaries.

A claim is one transaction.  The head of each queue (in the worker's order;
higher priority, then first in; fitting the worker's GPUs; its array under
its cap: :data:`~fleet.store.sqlite_arrays.UNDER_CAP`) is selected
``FOR UPDATE OF tasks SKIP LOCKED``: a row another claimer holds is passed
over, not waited for, so claimers on many hosts never queue behind each
other, and the transition function's guarded update makes a task go to one
of them only.  An array's ``max_running`` cannot be read from a snapshot
when claimers run side by side: a candidate of a capped array takes its
array's row ``FOR UPDATE`` (claims of one array go one at a time) and counts
its running tasks again; a full array's task is passed over, and the claim
goes on down the queue, as SQLite's does.
"""

from __future__ import annotations

from typing import Any

from fleet.core.models import Runner, Task, TaskEnd, Worker, WorkerMode
from fleet.store.dbapi import DbConn
from fleet.store.postgres_base import PostgresBase
from fleet.store.rows import SUMMARY_MARK
from fleet.store.sqlite_arrays import UNDER_CAP
from fleet.store.sqlite_tasks import SQLiteTasks

# a task summary's large columns, as rows.summary_columns does with SQLite's JSON functions
_SUMMARY_EXPR = {
    "script": (
        "(script::jsonb || jsonb_build_object("
        "'diff', CASE WHEN coalesce(script::jsonb->>'diff', '') <> '' THEN '{m}' END,"
        " 'setup_script', CASE WHEN coalesce(script::jsonb->>'setup_script', '') <> '' THEN '{m}' END))::text"
    ),
    "env": "(SELECT coalesce(jsonb_object_agg(key, ''), '{{}}'::jsonb)::text FROM jsonb_each(tasks.env::jsonb))",
    "requirements": (
        "CASE WHEN jsonb_typeof(requirements::jsonb->'file') = 'string'"
        " THEN jsonb_set(requirements::jsonb, '{{file}}', to_jsonb('{m}'::text))::text ELSE requirements END"
    ),
}


class PostgresTasks(SQLiteTasks, PostgresBase):
    """Mixed into :class:`fleet.store.postgres.PostgresStore`."""

    _columns: list[str] | None = None

    def _summary_columns(self) -> str:
        if self._columns is None:
            self._columns = [
                r[0]
                for r in self.conn.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = current_schema() AND table_name = 'tasks' ORDER BY ordinal_position"
                )
            ]
        return ", ".join(
            f"{_SUMMARY_EXPR[c].format(m=SUMMARY_MARK)} AS {c}" if c in _SUMMARY_EXPR else f'"{c}"'
            for c in self._columns
        )

    def claim_next_task(
        self,
        worker: Worker,
        queues: list[str],
        gpus: list[int],
        busy: str | None = None,
        ended: TaskEnd | None = None,
    ) -> Task | None:
        if ended is None and not self._any_waiting(queues):  # the common case for a woken worker that lost the race
            return None
        capacity = len(gpus) if worker.gpus is not None else 0
        with self._tx() as conn:
            if not self._may_claim(conn, worker, gpus, ended):
                return None
            for queue in queues:
                passed: list[str] = []
                while True:
                    not_in = f" AND id NOT IN ({','.join('?' * len(passed))})" if passed else ""
                    found = conn.execute(
                        "SELECT * FROM tasks WHERE queue = ? AND status = 'queued'"
                        f" AND (gpus_needed IS NULL OR gpus_needed <= ?) AND {UNDER_CAP}{not_in}"
                        " ORDER BY priority DESC, seq ASC LIMIT 1 FOR UPDATE OF tasks SKIP LOCKED",
                        (queue, capacity, *passed),
                    ).fetchone()
                    if found is None:
                        break
                    row = dict(found)
                    if self._array_full(conn, row):
                        passed.append(row["id"])
                        continue
                    task = self._start_attempt(conn, row, worker, worker.id, gpus, Runner.STATIC)
                    self._claimed_busy(conn, worker, task, busy)
                    return task
        return None

    def claim_task(self, task_id: str, worker: Worker, gpus: list[int], run_as: str) -> Task | None:
        with self._tx() as conn:
            if self._worker_lost(conn, worker.id):
                return None
            found = conn.execute(
                f"SELECT * FROM tasks WHERE id = ? AND status = 'queued' AND {UNDER_CAP} FOR UPDATE OF tasks",
                (task_id,),
            ).fetchone()
            if found is None or self._array_full(conn, dict(found)):
                return None
            runner = Runner.SERVICE if worker.mode == WorkerMode.SERVICES else Runner.POOL
            return self._start_attempt(conn, dict(found), worker, run_as, gpus, runner)

    @staticmethod
    def _array_full(conn: DbConn, row: dict[str, Any]) -> bool:
        """Whether the task's array is at its cap, counted under the array's row lock."""
        if row.get("array_id") is None:
            return False
        cap = conn.execute("SELECT max_running FROM arrays WHERE id = ? FOR UPDATE", (row["array_id"],)).fetchone()
        if cap is None or cap[0] is None:
            return False
        running = conn.execute(
            "SELECT COUNT(*) FROM tasks WHERE array_id = ? AND status = 'in_progress'", (row["array_id"],)
        ).fetchone()[0]
        return int(running) >= int(cap[0])
