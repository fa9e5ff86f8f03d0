"""The SQLite store: one file in WAL mode, shared by the manager and its workers.

Each thread of each process has its own connection.  Writes run in
``BEGIN IMMEDIATE`` transactions, which take SQLite's single write lock up
front, so a claim (select the first queued task, mark it in progress) is
atomic across processes.  ``busy_timeout`` makes a writer wait for the lock
instead of failing.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlite_utils

from fleet.errors import Conflict, NotFound, StoreError, UsageError
from fleet.models import (
    Event,
    ExitUsage,
    Queue,
    Runner,
    RuntimeProperty,
    Task,
    TaskAttempt,
    TaskSpec,
    TaskStatus,
    Worker,
    WorkerMode,
    WorkerState,
    check_task_move,
    check_worker_move,
)
from fleet.procs import Identity
from fleet.store import schema
from fleet.store.base import Store
from fleet.store.connections import Connections
from fleet.store.rows import (
    dumps,
    loads,
    row_size,
    summary_columns,
    to_attempt,
    to_task,
    to_worker,
    usable_timestamp,
    worker_columns,
    worker_updates,
)
from fleet.store.sqlite_gpus import SQLiteGpus

log = logging.getLogger(__name__)


class SQLiteStore(SQLiteGpus, Store):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Connections(path)
        self._ignored: set[tuple[str, str, str]] = set()  # unusable stored values already logged
        self._migrate()

    # -- connections and transactions ------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        return self._db.conn

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._db.tx()

    def _migrate(self) -> None:
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as fh:
                if fh.read(16) != b"SQLite format 3\x00":
                    raise StoreError(f"{self.path} is not an SQLite database; refusing to open or overwrite it")
            if self._refuse_newer() == schema.LATEST:
                self.conn  # noqa: B018 - open it now: a file that cannot be opened fails here, at start
                return  # nothing to write, so a full disk or a read-only file does not stop a start
        try:
            with self._tx() as conn:
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

    @staticmethod
    def _event(
        conn: sqlite3.Connection, kind: str, subject: str, old: str | None, new: str, actor: str, reason: str
    ) -> None:
        conn.execute(
            "INSERT INTO events (at, kind, subject, old, new, actor, reason) VALUES (?,?,?,?,?,?,?)",
            (time.time(), kind, subject, old, new, actor, reason),
        )

    # -- queues -----------------------------------------------------------------
    def _queue_row(self, conn: sqlite3.Connection, name_or_id: str) -> dict[str, Any]:
        row = conn.execute("SELECT * FROM queues WHERE name = ? OR id = ?", (name_or_id, name_or_id)).fetchone()
        if row is None:
            raise NotFound(f"queue {name_or_id!r} does not exist", field="queue")
        return dict(row)

    def create_queue(self, name: str, tags: list[str], actor: str) -> Queue:
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM queues WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"queue {name!r} already exists", field="name")
            qid = uuid.uuid4().hex
            conn.execute(
                "INSERT INTO queues (id, name, tags, created_at) VALUES (?,?,?,?)",
                (qid, name, dumps(sorted(set(tags))), time.time()),
            )
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

    # -- tasks ------------------------------------------------------------------
    def _task_row(self, conn: sqlite3.Connection, task_id: str) -> dict[str, Any]:
        row = conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            raise NotFound(f"task {task_id} does not exist", field="task")
        return dict(row)

    def _move_task(
        self,
        conn: sqlite3.Connection,
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
        if cur.rowcount != 1:  # pragma: no cover - guarded by BEGIN IMMEDIATE
            raise Conflict(f"task {row['id']} changed while being updated")
        row.update(fields)
        self._event(conn, "task", row["id"], old.value, new.value, actor, reason)

    def _next_seq(self, conn: sqlite3.Connection, queue: str, head: bool) -> float:
        if head:
            low = conn.execute("SELECT MIN(seq) FROM tasks WHERE queue = ? AND status = 'queued'", (queue,)).fetchone()[
                0
            ]
            return (low if low is not None else 0.0) - 1.0
        high = conn.execute("SELECT MAX(seq) FROM tasks").fetchone()[0]
        return (high if high is not None else 0.0) + 1.0

    def create_task(self, spec: TaskSpec, queue: str | None, actor: str) -> Task:
        task_id = uuid.uuid4().hex
        now = time.time()
        with self._tx() as conn:
            if queue is not None:
                queue = self._queue_row(conn, queue)["name"]
            conn.execute(
                "INSERT INTO tasks (id, name, status, status_reason, queue, priority, script, env, user, requirements,"
                " docker, attempt, retries, timeout, gpus_needed, created_at, parent, env_cached)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,0)",
                (
                    task_id,
                    spec.name or " ".join(spec.script.command)[:80] or task_id,
                    TaskStatus.CREATED.value,
                    "",
                    queue,
                    spec.priority,
                    dumps(spec.script.to_json()),
                    dumps(spec.env),
                    spec.user,
                    dumps(spec.requirements),
                    dumps(spec.docker),
                    0,
                    spec.retries,
                    spec.timeout,
                    spec.gpus,
                    now,
                    spec.parent,
                ),
            )
            self._event(conn, "task", task_id, None, TaskStatus.CREATED.value, actor, "")
            if queue is not None:
                row = self._task_row(conn, task_id)
                self._move_task(
                    conn, row, TaskStatus.QUEUED, actor, "", queued_at=now, seq=self._next_seq(conn, queue, False)
                )
        return self.get_task(task_id)

    def _resolve(self, conn: sqlite3.Connection, id_or_prefix: str) -> str:
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

    def get_task(self, id_or_prefix: str) -> Task:
        return to_task(self._task_row(self.conn, self._resolve(self.conn, id_or_prefix)))

    def list_tasks(
        self,
        *,
        queue: str | None = None,
        status: list[TaskStatus] | None = None,
        worker: str | None = None,
        limit: int = 100,
        offset: int = 0,
        summary: bool = False,
        max_bytes: int | None = None,
    ) -> tuple[list[Task], int]:
        where, params = [], []  # type: tuple[list[str], list[Any]]
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
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = self.conn.execute(f"SELECT COUNT(*) FROM tasks{clause}", params).fetchone()[0]
        columns = summary_columns(self._task_columns()) if summary else "*"
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

    def _task_columns(self) -> list[str]:
        return [r["name"] for r in self.conn.execute("PRAGMA table_info(tasks)")]

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
        conn: sqlite3.Connection,
        row: dict[str, Any],
        worker: Worker,
        run_as: str,
        gpus: list[int],
        runner: Runner,
    ) -> Task:
        """queued -> in_progress for ``run_as`` (the claiming worker, or a pool's per-task id): a new
        attempt, owned by ``worker`` and run by ``runner``."""
        now = time.time()
        attempt = row["attempt"] + 1
        self._move_task(
            conn,
            row,
            TaskStatus.IN_PROGRESS,
            f"worker:{worker.id}",
            "",
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

    def claim_next_task(self, worker: Worker, queues: list[str], gpus: list[int]) -> Task | None:
        capacity = len(gpus)
        if not queues:
            return None
        marks = ",".join("?" * len(queues))
        waiting = self.conn.execute(
            f"SELECT 1 FROM tasks WHERE status = 'queued' AND queue IN ({marks}) LIMIT 1", queues
        ).fetchone()
        if waiting is None:  # the common case for a woken worker that lost the race: no write lock taken
            return None
        with self._tx() as conn:
            for queue in queues:
                found = conn.execute(
                    "SELECT * FROM tasks WHERE queue = ? AND status = 'queued'"
                    " AND (gpus_needed IS NULL OR gpus_needed <= ?) ORDER BY priority DESC, seq ASC LIMIT 1",
                    (queue, capacity if worker.gpus is not None else 0),
                ).fetchone()
                if found is None:
                    continue
                return self._start_attempt(conn, dict(found), worker, worker.id, gpus, Runner.STATIC)
        return None

    def set_task_process(self, task_id: str, pid: int, started: Identity | None) -> None:
        start, boot = (started.ticks, started.boot) if started is not None else (None, None)
        with self._tx() as conn:
            conn.execute(
                "UPDATE tasks SET pid = ?, pid_start = ?, pid_boot = ? WHERE id = ?", (pid, start, boot, task_id)
            )

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
    ) -> Task:
        now = time.time()
        with self._tx() as conn:
            row = self._task_row(conn, task_id)
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
                    task_id,
                    row["attempt"],
                ),
            )
            if requeue is not None and row["queue"] is not None:
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
        return to_task(row)

    def attempts(self, task_id: str) -> list[TaskAttempt]:
        rows = self.conn.execute(
            "SELECT * FROM task_attempts WHERE task_id = ? ORDER BY attempt", (self._resolve(self.conn, task_id),)
        ).fetchall()
        return [to_attempt(dict(r)) for r in rows]

    def record_environment(self, task_id: str, env_cached: bool, frozen: list[str], manager: str, python: str) -> None:
        with self._tx() as conn:
            row = self._task_row(conn, task_id)
            requirements = loads(row["requirements"], {})
            requirements.update(frozen=list(frozen), manager=manager, python=python)
            conn.execute(
                "UPDATE tasks SET env_cached = ?, requirements = ? WHERE id = ?",
                (int(env_cached), dumps(requirements), task_id),
            )

    def peek_tasks(self, queues: Mapping[str, int | None]) -> dict[str, Task]:
        out: dict[str, Task] = {}
        for queue, limit in queues.items():
            fits = "" if limit is None else " AND (gpus_needed IS NULL OR gpus_needed <= ?)"
            row = self.conn.execute(
                f"SELECT * FROM tasks WHERE queue = ? AND status = 'queued'{fits} ORDER BY priority DESC, seq ASC LIMIT 1",
                (queue,) if limit is None else (queue, limit),
            ).fetchone()
            if row is not None:
                out[queue] = to_task(dict(row))
        return out

    def claim_task(self, task_id: str, worker: Worker, gpus: list[int], run_as: str) -> Task | None:
        with self._tx() as conn:
            found = conn.execute("SELECT * FROM tasks WHERE id = ? AND status = 'queued'", (task_id,)).fetchone()
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
            return self._start_attempt(conn, row, worker, worker.id, gpus, runner)

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

    # -- workers ----------------------------------------------------------------
    def register_worker(self, worker: Worker, actor: str) -> Worker:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM workers WHERE id = ?", (worker.id,)).fetchone()
            values = {
                **worker_columns(worker),
                "pool": None,
                "stop_request": None,
                "pid": None,
                "pid_start": None,
                "pid_boot": None,
            }
            if row is None:
                conn.execute(
                    "INSERT INTO workers (id, state, state_reason, created_at, restarts, "
                    + ", ".join(values)
                    + ") VALUES (?,?,?,?,0,"
                    + ",".join("?" * len(values))
                    + ")",
                    (worker.id, WorkerState.IDLE.value, "starting", time.time(), *values.values()),
                )
                self._event(conn, "worker", worker.id, None, WorkerState.IDLE.value, actor, "created")
            else:
                old = WorkerState(row["state"])
                check_worker_move(worker.id, old, WorkerState.IDLE)
                columns = ", ".join(f"{k} = ?" for k in values)
                conn.execute(
                    f"UPDATE workers SET state = ?, state_reason = ?, {columns} WHERE id = ?",
                    (WorkerState.IDLE.value, "starting", *values.values(), worker.id),
                )
                self._event(conn, "worker", worker.id, old.value, WorkerState.IDLE.value, actor, "started again")
        return self.get_worker(worker.id)

    def get_worker(self, worker_id: str) -> Worker:
        row = self.conn.execute("SELECT * FROM workers WHERE id = ?", (worker_id,)).fetchone()
        if row is None:
            raise NotFound(f"worker {worker_id} does not exist", field="worker")
        return to_worker(dict(row))

    def list_workers(self, include_dead: bool = False) -> list[Worker]:
        sql = "SELECT * FROM workers" + ("" if include_dead else " WHERE state != 'dead'") + " ORDER BY id"
        return [to_worker(dict(r)) for r in self.conn.execute(sql)]

    def set_worker_state(self, worker_id: str, state: WorkerState, reason: str, actor: str, **fields: Any) -> Worker:
        """The one transition function for workers: check, update, record."""
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM workers WHERE id = ?", (worker_id,)).fetchone()
            if row is None:
                raise NotFound(f"worker {worker_id} does not exist", field="worker")
            old = WorkerState(row["state"])
            check_worker_move(worker_id, old, state)
            updates = {**worker_updates(fields), "state": state.value, "state_reason": reason}
            columns = ", ".join(f"{k} = ?" for k in updates)
            conn.execute(f"UPDATE workers SET {columns} WHERE id = ?", (*updates.values(), worker_id))
            if old != state or row["state_reason"] != reason:
                self._event(conn, "worker", worker_id, old.value, state.value, actor, reason)
        return self.get_worker(worker_id)

    def update_worker(self, worker_id: str, **fields: Any) -> None:
        updates = worker_updates(fields)
        if not updates:
            return
        with self._tx() as conn:
            columns = ", ".join(f"{k} = ?" for k in updates)
            cur = conn.execute(f"UPDATE workers SET {columns} WHERE id = ?", (*updates.values(), worker_id))
            if cur.rowcount == 0:
                raise NotFound(f"worker {worker_id} does not exist", field="worker")

    # -- runtime properties ------------------------------------------------------
    def set_runtime_property(self, worker_id: str, key: str, value: str, expires_at: float | None, actor: str) -> None:
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM workers WHERE id = ?", (worker_id,)).fetchone() is None:
                raise NotFound(f"worker {worker_id} does not exist", field="worker")
            conn.execute(
                "INSERT OR REPLACE INTO runtime_properties (worker, key, value, expires_at, set_at) VALUES (?,?,?,?,?)",
                (worker_id, key, value, expires_at, time.time()),
            )
            until = f" until {expires_at:.0f}" if expires_at is not None else ""
            self._event(conn, "worker", worker_id, None, f"{key}={value}", actor, f"runtime property{until}")

    def delete_runtime_property(self, worker_id: str, key: str, actor: str) -> bool:
        with self._tx() as conn:
            cur = conn.execute("DELETE FROM runtime_properties WHERE worker = ? AND key = ?", (worker_id, key))
            if cur.rowcount:
                self._event(conn, "worker", worker_id, key, "deleted", actor, "runtime property")
            return cur.rowcount > 0

    def runtime_properties(self, now: float | None = None) -> dict[str, dict[str, RuntimeProperty]]:
        now = time.time() if now is None else now
        out: dict[str, dict[str, RuntimeProperty]] = {}
        for r in self.conn.execute(
            "SELECT * FROM runtime_properties WHERE expires_at IS NULL OR expires_at > ?", (now,)
        ):
            if r["expires_at"] is not None and not usable_timestamp(r["expires_at"]):
                self._ignore(r["worker"], f"runtime property {r['key']}", f"expiry {r['expires_at']!r}")
                continue
            out.setdefault(r["worker"], {})[r["key"]] = RuntimeProperty(r["value"], r["expires_at"], r["set_at"])
        return out

    def _ignore(self, subject: str, what: str, value: str) -> None:
        """A stored value this version cannot use (written by another version,
        or by hand) is left in place and ignored; it is logged once."""
        key = (subject, what, value)
        if key not in self._ignored:
            self._ignored.add(key)
            log.warning("store: %s: %s: %s cannot be used; ignored", subject, what, value)

    def purge_runtime_properties(self, now: float, actor: str) -> list[str]:
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT worker, key FROM runtime_properties WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
            ).fetchall()
            for worker, key in rows:
                conn.execute("DELETE FROM runtime_properties WHERE worker = ? AND key = ?", (worker, key))
                self._event(conn, "worker", worker, key, "expired", actor, "runtime property")
        return sorted({r[0] for r in rows})

    # -- events -----------------------------------------------------------------
    def events(self, kind: str | None = None, subject: str | None = None, limit: int = 200) -> list[Event]:
        where, params = [], []  # type: tuple[list[str], list[Any]]
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if subject is not None:
            where.append("subject = ?")
            params.append(subject)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self.conn.execute(f"SELECT * FROM events{clause} ORDER BY id DESC LIMIT ?", (*params, limit))
        return [
            Event(
                id=r["id"],
                at=r["at"],
                kind=r["kind"],
                subject=r["subject"],
                old=r["old"],
                new=r["new"],
                actor=r["actor"],
                reason=r["reason"] or "",
            )
            for r in rows
        ][::-1]
