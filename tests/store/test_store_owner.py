"""Ownership as data: each attempt records its owner and runner when it
starts; a database from before (schema v7) gets them from the old rule of
worker ids when it is opened, and the indexed queries find running tasks."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import sqlite_utils

from fleet.core.models import Runner, Script, TaskSpec, TaskStatus, Worker, WorkerMode, WorkerState
from fleet.store import schema
from fleet.store.sqlite import SQLiteStore
from tests.store.backends import open_target

SERVICE_TASK = "5e" * 16
V7 = schema.MIGRATIONS.index(schema._owner)  # the version before owner columns


def _v7_database(path: Path) -> None:
    """A database as fleet left it before ``_owner``: three workers and one task
    in progress for each kind of runner, ownership only in the worker ids."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    db = sqlite_utils.Database(conn)
    for migration in schema.MIGRATIONS[:V7]:
        migration(db)
    conn.execute(f"PRAGMA user_version={V7}")
    workers = [
        ("box:gpu0", "static", "[0]"),
        ("box:dgpu", "dynamic", "[4,5,6,7]"),
        ("box:services", "services", "null"),
    ]
    for wid, mode, gpus in workers:
        conn.execute(
            "INSERT INTO workers (id, host, mode, gpus, queues, state, created_at) VALUES (?,?,?,?,?,?,?)",
            (wid, "box", mode, gpus, '["q"]', "busy", 0.0),
        )
    tasks = [  # id, worker it runs as, GPUs, pid, status
        ("a0" * 16, "box:gpu0", "[0]", 100, "in_progress"),
        ("b0" * 16, "box:gpu4,5", "[4,5]", 101, "in_progress"),
        (SERVICE_TASK, f"box:service:{SERVICE_TASK}", "[]", 102, "in_progress"),
        ("d0" * 16, "box:image", "[]", None, "in_progress"),  # a remote executor: no pid, no worker
        ("e0" * 16, "box:execute", "[1]", 103, "in_progress"),
        ("f0" * 16, "box:gpu0,1", "[0,1]", 104, "in_progress"),  # GPUs outside the pool: no owner known
        ("c1" * 16, "box:gpu6", "[6]", None, "completed"),  # an ended pool task: kept for list --worker
    ]
    for tid, run_as, gpus, pid, status in tasks:
        conn.execute(
            "INSERT INTO tasks (id, name, status, priority, script, attempt, retries, created_at, worker, host,"
            " gpus, pid) VALUES (?,?,?,0,'{}',1,0,0.0,?,?,?,?)",
            (tid, tid, status, run_as, "box", gpus, pid),
        )
        conn.execute(
            "INSERT INTO task_attempts (task_id, attempt, worker, host, gpus, started_at, status)"
            " VALUES (?,1,?,?,?,0.0,?)",
            (tid, run_as, "box", gpus, status),
        )
    conn.close()


def test_a_v7_database_opens_with_each_attempts_owner_and_runner(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db"
    _v7_database(path)
    store = SQLiteStore(path)
    try:
        got = {t.id[:2]: (t.owner, t.runner) for t in store.running_tasks()}
        assert got == {
            "a0": ("box:gpu0", Runner.STATIC),
            "b0": ("box:dgpu", Runner.POOL),
            SERVICE_TASK[:2]: ("box:services", Runner.SERVICE),
            "d0": ("box:image", Runner.REMOTE),
            "e0": ("box:execute", Runner.EXECUTE),
            "f0": ("box:gpu0,1", Runner.EXECUTE),
        }
        assert [t.id[:2] for t in store.running_tasks(runner=Runner.REMOTE)] == ["d0"]
        assert [t.id[:2] for t in store.running_tasks(owner="box:dgpu")] == ["b0"]
        assert {k: sorted(v) for k, v in store.running_by_owner().items()}["box:services"] == [SERVICE_TASK]
        listed, _ = store.list_tasks(worker="box:dgpu")
        assert sorted(t.id[:2] for t in listed) == ["b0", "c1"]
        conn = sqlite3.connect(path)
        try:
            attempts = dict(conn.execute("SELECT task_id, runner FROM task_attempts").fetchall())
            indexes = {r[1] for r in conn.execute("PRAGMA index_list(tasks)")}
        finally:
            conn.close()
        assert attempts["b0" * 16] == "pool" and attempts["c1" * 16] is None  # ended before: the report's to work out
        assert {"tasks_status_owner", "tasks_status_runner", "tasks_status_host"} <= indexes
    finally:
        store.close()


def test_claims_and_starts_record_owner_and_runner(store_target: str) -> None:
    store = open_target(store_target)
    try:
        store.create_queue("q", [], "t")
        pool = Worker("box:dgpu", "box", WorkerMode.DYNAMIC, [0, 1], ["q"], False, WorkerState.IDLE, "", time.time())
        services = Worker("box:services", "box", WorkerMode.SERVICES, None, ["q"], False, WorkerState.IDLE, "", 0.0)
        static = Worker("box:gpu2", "box", WorkerMode.STATIC, [2], ["q"], False, WorkerState.IDLE, "", 0.0)
        for w in (pool, services, static):
            store.register_worker(w, "t")
        spec = TaskSpec(Script(["true"], "/"))
        ids = [store.create_task(spec, "q", "t").id for _ in range(3)]
        child = store.claim_task(ids[0], pool, [1], "box:gpu1")
        service = store.claim_task(ids[1], services, [], f"box:service:{ids[1]}")
        own = store.claim_next_task(static, ["q"], [2])
        remote = store.start_task(store.create_task(spec, None, "t").id, static, [], "t", Runner.REMOTE)
        assert child is not None and service is not None and own is not None
        assert (child.worker, child.owner, child.runner) == ("box:gpu1", "box:dgpu", Runner.POOL)
        assert (service.owner, service.runner) == ("box:services", Runner.SERVICE)
        assert (own.worker, own.owner, own.runner) == ("box:gpu2", "box:gpu2", Runner.STATIC)
        assert remote.runner == Runner.REMOTE
        assert [t.id for t in store.running_tasks(owner="box:dgpu")] == [child.id]
        assert [t.id for t in store.running_tasks(host="elsewhere")] == []
        store.finish_task(child.id, TaskStatus.COMPLETED, exit_code=0, reason="", actor="t")
        assert store.running_tasks(owner="box:dgpu") == []
        assert [t.id for t in store.list_tasks(worker="box:dgpu")[0]] == [child.id]  # ended: still listed
    finally:
        store.close()
