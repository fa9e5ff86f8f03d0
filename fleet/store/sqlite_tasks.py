"""The SQLite store's tasks: create, list, queue, claim, start, finish.

A claim is atomic across processes: the first fitting queued task is
selected and marked in progress inside one ``BEGIN IMMEDIATE`` transaction.
Each attempt records the worker that owns it and its runner
(:class:`fleet.core.models.Runner`) when it starts, so "which tasks does this
worker run" is an indexed read (:meth:`SQLiteTasks.running_tasks`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection, Mapping
from typing import Any

from fleet.core.errors import Conflict, InvalidTransition, NotFound
from fleet.core.gpuspec import parent_gpu
from fleet.core.models import (
    ExitUsage,
    Runner,
    Task,
    TaskAttempt,
    TaskEnd,
    TaskSpec,
    TaskStatus,
    Worker,
    WorkerMode,
    WorkerState,
)
from fleet.core.procs import Identity
from fleet.store.dbapi import DbConn
from fleet.store.rows import dumps, loads, row_size, summary_columns, to_attempt, to_task
from fleet.store.sqlite_arrays import UNDER_CAP, SQLiteArrays
from fleet.store.sqlite_workers import move_worker

# the next task of a queue a worker of a given capacity can run: read from the
# index in this order (tasks_queue_head), never by sorting the queue
QUEUE_HEAD = (
    "SELECT * FROM tasks WHERE queue = ? AND status = 'queued'"
    f" AND (gpus_needed IS NULL OR gpus_needed <= ?) AND {UNDER_CAP}"
    " ORDER BY priority DESC, seq ASC LIMIT 1"
)


class SQLiteTasks(SQLiteArrays):
    """Mixed into :class:`fleet.store.sqlite.SQLiteStore`."""

    def create_task(self, spec: TaskSpec, queue: str | None, actor: str) -> Task:
        (task_id,) = self.create_tasks([(spec, queue)], None, actor)
        return self.get_task(task_id)

    def get_task(self, id_or_prefix: str) -> Task:
        return to_task(self._task_row(self.conn, self._resolve(self.conn, id_or_prefix)))

    def list_tasks(
        self,
        *,
        queue: str | None = None,
        status: list[TaskStatus] | None = None,
        worker: str | None = None,
        host: str | None = None,
        limit: int = 100,
        offset: int = 0,
        summary: bool = False,
        max_bytes: int | None = None,
    ) -> tuple[list[Task], int]:
        where: list[str] = []
        params: list[Any] = []
        if queue is not None:
            where.append("queue = ?")
            params.append(queue)
        if status:
            where.append(f"status IN ({','.join('?' * len(status))})")
            params.extend(s.value for s in status)
        if worker is not None:
            clause, values = self._worker_clause(worker)
            where.append(clause)
            params.extend(values)
        if host is not None:
            where.append("host = ?")
            params.append(host)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = self.conn.execute(f"SELECT COUNT(*) FROM tasks{clause}", params).fetchone()[0]
        columns = self._summary_columns() if summary else "*"
        cursor = self.conn.execute(
            f"SELECT {columns} FROM tasks{clause} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        tasks: list[Task] = []
        size = 0
        for row in cursor:
            size += row_size(row)
            if max_bytes is not None and tasks and size > max_bytes:
                break
            tasks.append(to_task(dict(row)))
        cursor.close()
        return tasks, int(total)

    def _summary_columns(self) -> str:
        """The select list of a task summary (SQLite's JSON functions)."""
        return summary_columns([r["name"] for r in self.conn.execute("PRAGMA table_info(tasks)")])

    @staticmethod
    def _worker_clause(worker_id: str) -> tuple[str, list[Any]]:
        """Tasks run by ``worker_id`` or owned by it (a pool's or services worker's per-task children)."""
        return "(worker = ? OR owner = ?)", [worker_id, worker_id]

    def running_tasks(
        self, *, owner: str | None = None, runner: Runner | None = None, host: str | None = None
    ) -> list[Task]:
        where, params = ["status = ?"], [TaskStatus.IN_PROGRESS.value]
        for column, value in (("owner", owner), ("runner", runner.value if runner else None), ("host", host)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = f"SELECT * FROM tasks WHERE {' AND '.join(where)} ORDER BY started_at, id"
        return [to_task(dict(r)) for r in self.conn.execute(sql, params)]

    def running_by_owner(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        sql = "SELECT coalesce(owner, worker), id FROM tasks WHERE status = ? ORDER BY created_at DESC, id"
        for owner, task_id in self.conn.execute(sql, (TaskStatus.IN_PROGRESS.value,)):
            if owner:
                out.setdefault(owner, []).append(task_id)
        return out

    def enqueue_task(self, task_id: str, queue: str, actor: str, reason: str = "", head: bool = False) -> Task:
        with self._tx() as conn:
            row = self._task_row(conn, self._resolve(conn, task_id))
            qname = self._queue_row(conn, queue)["name"]
            self._move_task(
                conn,
                row,
                TaskStatus.QUEUED,
                actor,
                reason,
                queue=qname,
                queued_at=time.time(),
                seq=self._next_seq(conn, qname, head),
                abort_requested=None,
            )
        return to_task(row)

    def dequeue_task(self, task_id: str, actor: str) -> Task:
        with self._tx() as conn:
            row = self._task_row(conn, self._resolve(conn, task_id))
            if row["status"] != TaskStatus.QUEUED.value:
                raise Conflict(f"task {row['id']} is {row['status']}, not queued", field="task")
            self._move_task(conn, row, TaskStatus.CREATED, actor, "dequeued", queued_at=None)
        return to_task(row)

    def _start_attempt(
        self,
        conn: DbConn,
        row: dict[str, Any],
        worker: Worker,
        run_as: str,
        gpus: list[int],
        runner: Runner,
        reason: str = "",
    ) -> Task:
        """queued -> in_progress for ``run_as`` (the claiming worker, or a pool's per-task id): a new
        attempt, owned by ``worker`` and run by ``runner``; ``reason`` goes on its event."""
        now = time.time()
        attempt = row["attempt"] + 1
        self._move_task(
            conn,
            row,
            TaskStatus.IN_PROGRESS,
            f"worker:{worker.id}",
            reason,
            worker=run_as,
            host=worker.host,
            gpus=dumps(gpus),
            started_at=now,
            finished_at=None,
            exit_code=None,
            attempt=attempt,
            pid=None,
            pid_start=None,
            pid_boot=None,
            abort_requested=None,
            gpu_uuids=None,
            owner=worker.id,
            runner=runner.value,
        )
        conn.execute(
            "INSERT INTO task_attempts (task_id, attempt, worker, host, gpus, started_at, status, owner, runner)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (
                row["id"],
                attempt,
                run_as,
                worker.host,
                dumps(gpus),
                now,
                TaskStatus.IN_PROGRESS.value,
                worker.id,
                runner.value,
            ),
        )
        return to_task(row)

    def _may_claim(self, conn: DbConn, worker: Worker, gpus: list[int], ended: TaskEnd | None) -> bool:
        """A claim's first step, in its transaction: record the end it carries
        (fenced like :meth:`finish_task`: a taken attempt's end refuses the
        claim too), then whether ``worker`` may claim with ``gpus``: a lost
        worker may not, nor one with a GPU drained (read here rather than
        before the claim: one read of the database per task less)."""
        if ended is not None:
            self._finish(conn, ended)
        return not self._worker_lost(conn, worker.id) and not self._any_drained(conn, worker.host, gpus)

    @staticmethod
    def _any_drained(conn: DbConn, host: str, gpus: list[int]) -> bool:
        """Whether one of ``gpus`` on ``host`` is drained (a MIG unit: or its GPU)."""
        units = sorted(set(gpus) | {parent_gpu(g) for g in gpus})
        if not units:
            return False
        marks = ",".join("?" * len(units))
        sql = f"SELECT 1 FROM gpu_drains WHERE host = ? AND gpu IN ({marks}) LIMIT 1"
        return conn.execute(sql, [host, *units]).fetchone() is not None

    def claim_next_task(
        self,
        worker: Worker,
        queues: list[str],
        gpus: list[int],
        busy: str | None = None,
        ended: TaskEnd | None = None,
    ) -> Task | None:
        capacity = len(gpus)
        if ended is None and not self._any_waiting(queues):  # a woken worker that lost the race: no write lock taken
            return None
        with self._tx() as conn:
            if not self._may_claim(conn, worker, gpus, ended):
                return None
            for queue in queues:
                found = conn.execute(QUEUE_HEAD, (queue, capacity if worker.gpus is not None else 0)).fetchone()
                if found is None:
                    continue
                task = self._start_attempt(conn, dict(found), worker, worker.id, gpus, Runner.STATIC)
                self._claimed_busy(conn, worker, task, busy)
                return task
        return None

    def _claimed_busy(self, conn: DbConn, worker: Worker, task: Task, busy: str | None) -> None:
        """With ``busy``, the claiming worker becomes busy in the claim's own
        transaction (one transaction less per task than a separate state write)."""
        if busy is None:
            return
        with contextlib.suppress(NotFound, InvalidTransition):
            reason = busy.replace("{task}", task.id)
            actor, fields = f"worker:{worker.id}", {"last_seen": time.time()}
            move_worker(conn, worker.id, WorkerState.BUSY, reason, actor, fields, self._for_update(conn))

    def _any_waiting(self, queues: list[str]) -> bool:
        """A read, no lock: whether any task is queued in ``queues``."""
        if not queues:
            return False
        marks = ",".join("?" * len(queues))
        sql = f"SELECT 1 FROM tasks WHERE status = 'queued' AND queue IN ({marks}) LIMIT 1"
        return self.conn.execute(sql, queues).fetchone() is not None

    def set_task_process(self, task_id: str, pid: int, started: Identity | None, attempt: int | None = None) -> None:
        with self._tx() as conn:
            if not self._set_process(conn, task_id, pid, started, attempt):
                self._check_owner(self._task_row(conn, task_id), attempt)

    @staticmethod
    def _set_process(
        conn: DbConn, task_id: str, pid: int, started: Identity | None, attempt: int | None = None
    ) -> bool:
        """Write the attempt's process (with ``attempt``: only while that attempt owns the task); whether it did."""
        start, boot = (started.ticks, started.boot) if started is not None else (None, None)
        owned = "" if attempt is None else " AND attempt = ? AND status = 'in_progress'"
        cur = conn.execute(
            f"UPDATE tasks SET pid = ?, pid_start = ?, pid_boot = ? WHERE id = ?{owned}",
            (pid, start, boot, task_id) + (() if attempt is None else (attempt,)),
        )
        return cur.rowcount == 1

    def request_abort(self, task_id: str, actor: str, reason: str) -> Task:
        with self._tx() as conn:
            row = self._task_row(conn, self._resolve(conn, task_id))
            status = TaskStatus(row["status"])
            if status == TaskStatus.QUEUED:
                self._move_task(conn, row, TaskStatus.STOPPED, actor, reason, finished_at=time.time())
            elif status == TaskStatus.IN_PROGRESS:
                conn.execute("UPDATE tasks SET abort_requested = ? WHERE id = ?", (reason, row["id"]))
                self._event(conn, "task", row["id"], status.value, "abort_requested", actor, reason)
                row["abort_requested"] = reason
            else:
                raise Conflict(
                    f"task {row['id']} is {status.value}; only queued or running tasks can be aborted", field="task"
                )
        return to_task(row)

    def finish_task(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        exit_code: int | None,
        reason: str,
        actor: str,
        requeue: str | None = None,
        usage: ExitUsage | None = None,
        pid: int | None = None,
        started: Identity | None = None,
        attempt: int | None = None,
    ) -> Task:
        end = TaskEnd(task_id, status, exit_code, reason, actor, requeue, usage, pid, started, attempt)
        with self._tx() as conn:
            return to_task(self._finish(conn, end))

    def _finish(self, conn: DbConn, end: TaskEnd) -> dict[str, Any]:
        """:meth:`finish_task` inside the caller's transaction (its own, or a
        claim's: a static worker's last end lands with its next claim); the
        task's row as it is now."""
        row = self._task_row(conn, end.task_id)
        self._check_owner(row, end.attempt)
        if end.pid is not None:
            started = end.started
            self._set_process(conn, end.task_id, end.pid, started)
            row.update(
                pid=end.pid, pid_start=started.ticks if started else None, pid_boot=started.boot if started else None
            )
        self._end_attempt(conn, row, end.status, end.exit_code, end.reason, end.actor, end.requeue, end.usage)
        return row

    def attempts(self, task_id: str) -> list[TaskAttempt]:
        rows = self.conn.execute(
            "SELECT * FROM task_attempts WHERE task_id = ? ORDER BY attempt", (self._resolve(self.conn, task_id),)
        ).fetchall()
        return [to_attempt(dict(r)) for r in rows]

    def record_environment(
        self,
        task_id: str,
        env_cached: bool,
        frozen: list[str],
        manager: str,
        python: str,
        attempt: int | None = None,
    ) -> None:
        with self._tx() as conn:
            row = self._task_row(conn, task_id)
            self._check_owner(row, attempt)
            requirements = loads(row["requirements"], {})
            requirements.update(frozen=list(frozen), manager=manager, python=python)
            conn.execute(
                "UPDATE tasks SET env_cached = ?, requirements = ? WHERE id = ?",
                (int(env_cached), dumps(requirements), task_id),
            )

    def peek_tasks(self, queues: Mapping[str, int | None], exclude: Collection[str] = ()) -> dict[str, Task]:
        out: dict[str, Task] = {}
        passed = list(exclude)
        not_in = f" AND id NOT IN ({','.join('?' * len(passed))})" if passed else ""
        for queue, limit in queues.items():
            fits = "" if limit is None else " AND (gpus_needed IS NULL OR gpus_needed <= ?)"
            row = self.conn.execute(
                f"SELECT * FROM tasks WHERE queue = ? AND status = 'queued'{fits} AND {UNDER_CAP}{not_in}"
                " ORDER BY priority DESC, seq ASC LIMIT 1",
                ((queue,) if limit is None else (queue, limit)) + tuple(passed),
            ).fetchone()
            if row is not None:
                out[queue] = to_task(dict(row))
        return out

    def claim_task(self, task_id: str, worker: Worker, gpus: list[int], run_as: str) -> Task | None:
        with self._tx() as conn:
            if self._worker_lost(conn, worker.id):
                return None
            found = conn.execute(
                f"SELECT * FROM tasks WHERE id = ? AND status = 'queued' AND {UNDER_CAP}", (task_id,)
            ).fetchone()
            if found is None:
                return None
            runner = Runner.SERVICE if worker.mode == WorkerMode.SERVICES else Runner.POOL
            return self._start_attempt(conn, dict(found), worker, run_as, gpus, runner)

    def start_task(self, task_id: str, worker: Worker, gpus: list[int], actor: str, runner: Runner) -> Task:
        with self._tx() as conn:
            row = self._task_row(conn, self._resolve(conn, task_id))
            if row["status"] == TaskStatus.IN_PROGRESS.value:
                raise Conflict(
                    f"task {row['id']} is running on {row['worker']}; run a clone of it instead", field="task"
                )
            need = row["gpus_needed"] or 0
            if need > len(gpus):
                raise Conflict(f"task {row['id']} needs {need} GPU(s); {len(gpus)} given", field="gpus")
            if row["status"] != TaskStatus.QUEUED.value:
                self._move_task(conn, row, TaskStatus.QUEUED, actor, f"started directly on {worker.id}")
            # the event names who started it (a remote task's lease is its starting manager's: fleet.manager.leases)
            return self._start_attempt(conn, row, worker, worker.id, gpus, runner, f"started by {actor}")

    def mark_unfit_tasks(self, queues: list[str], max_gpus: int, reason: str) -> int:
        if not queues:
            return 0
        marks = ",".join("?" * len(queues))
        where = f"queue IN ({marks}) AND status = 'queued' AND gpus_needed > ? AND status_reason != ?"
        params = (*queues, max_gpus, reason)
        if self.conn.execute(f"SELECT 1 FROM tasks WHERE {where} LIMIT 1", params).fetchone() is None:
            return 0
        with self._tx() as conn:
            return int(conn.execute(f"UPDATE tasks SET status_reason = ? WHERE {where}", (reason, *params)).rowcount)
