"""The fleet-wide views' reads (issue 14 item 8), on both stores: tasks of one
host, and each sample row carrying the host it was taken on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

from fleet.core.models import Script, TaskSpec, TaskStatus, Worker
from fleet.core.nvml import GpuSample
from fleet.metrics.samples import KINDS, HostSample, Snapshot, TaskSample, WorkerSample
from fleet.store import schema
from fleet.store.interface import Store
from fleet.store.sqlite import SQLiteStore
from tests.factories import live_worker
from tests.store.test_store_samples import T0, open_samples


def _worker(host: str) -> Worker:
    return live_worker(f"{host}:cpu", None, ["q"], host=host)


def _spec(name: str) -> TaskSpec:
    return TaskSpec(script=Script(command=["true"], working_dir="."), name=name)


def test_tasks_of_one_host_are_those_it_ran(store: Store) -> None:
    a = store.register_worker(_worker("alpha"), "test")
    b = store.register_worker(_worker("beta"), "test")
    ids = [store.create_task(_spec(f"t{i}"), "q", "test").id for i in range(3)]
    first = store.claim_next_task(a, ["q"], [])
    second = store.claim_next_task(b, ["q"], [])
    assert first is not None and second is not None
    on_alpha, total = store.list_tasks(host="alpha")
    assert ([t.id for t in on_alpha], total) == ([first.id], 1)
    on_beta, _ = store.list_tasks(host="beta", status=[TaskStatus.IN_PROGRESS])
    assert [t.id for t in on_beta] == [second.id]
    assert store.list_tasks(host="gamma") == ([], 0)
    # a queued task ran nowhere yet: every host's list leaves it out, the fleet's has it
    queued = next(t for t in ids if t not in (first.id, second.id))
    assert queued in [t.id for t in store.list_tasks()[0]]


def test_every_sample_row_carries_its_host_and_a_series_reads_one_host(store_target: str) -> None:
    samples = open_samples(store_target)
    try:
        for k in range(12):  # two minutes, two hosts, each with its worker and its running task
            for host, cpu in (("alpha", 10.0), ("beta", 30.0)):
                snap = Snapshot(
                    T0 + 10 * k,
                    HostSample(host, cpu, 0.5, 100.0, 1000.0, 10.0, 50.0, 1.0, 2.0),
                    (GpuSample(0, None, cpu, 1.0, 2.0, None, None),),
                    (WorkerSample(f"{host}:gpu0", "busy", (0,), cpu, 1.0, cpu, 5.0),),
                    (TaskSample(host[0] * 32, 1, f"{host}:gpu0", (1,), cpu, 5.0, None),),
                )
                samples.write(snap)
        samples.maintain(T0 + 130, 86400.0, 30 * 86400.0)
        for kind in KINDS.values():
            for step in (10, 60):  # raw rows and roll-ups
                every = samples.series(kind, T0, T0 + 120, step)
                assert sorted({s["labels"]["host"] for s in every}) == ["alpha", "beta"], (kind.name, step)
                beta = samples.series(kind, T0, T0 + 120, step, host="beta")
                assert beta and {s["labels"]["host"] for s in beta} == {"beta"}, (kind.name, step)
        (worker,) = samples.series(KINDS["worker"], T0, T0 + 120, 60, host="alpha")
        assert worker["id"] == "alpha:gpu0" and worker["values"]["cpu_percent"] == [10.0, 10.0]
        assert samples.series(KINDS["task"], T0, T0 + 120, 60, host="gamma") == []
    finally:
        samples.close()


def test_samples_from_before_get_their_workers_and_attempts_host(tmp_path: Path) -> None:
    """An SQLite database one migration old, with worker and task samples: opened, each row has a host."""
    db = tmp_path / "fleet.db"
    conn = sqlite3.connect(db, isolation_level=None)
    before = schema.MIGRATIONS.index(schema._sample_hosts)
    for migration in schema.MIGRATIONS[:before]:
        migration(sqlite_utils.Database(conn))
    conn.execute(f"PRAGMA user_version={before}")
    conn.execute(
        "INSERT INTO workers (id, host, mode, gpus, queues, state, created_at) VALUES ('b:cpu','b','static','null','[]','idle',0)"
    )
    conn.execute(
        "INSERT INTO task_attempts (task_id, attempt, worker, host, gpus, started_at, status) VALUES (?,1,'b:cpu','b','[]',0,'completed')",
        ("ab" * 16,),
    )
    conn.execute("INSERT INTO metrics_worker (res, at, worker, busy) VALUES (0, ?, 'b:cpu', 1)", (T0,))
    conn.execute(
        "INSERT INTO metrics_task (res, at, task, attempt, cpu_percent) VALUES (0, ?, ?, 1, 5)", (T0, "ab" * 16)
    )
    conn.close()
    SQLiteStore(db).close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT host FROM metrics_worker").fetchall() == [("b",)]
    assert conn.execute("SELECT host FROM metrics_task").fetchall() == [("b",)]
    conn.close()
