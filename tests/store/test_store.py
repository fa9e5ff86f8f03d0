"""The store against real databases: schema, state machines, queue order,
attempts, and exactly-once claims across real processes.  Every test that
takes ``store`` runs on both implementations (an SQLite file and a real
PostgreSQL server: ``store_target`` in conftest.py); the schema tests name
their implementation."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sqlite3
import time
from dataclasses import replace
from multiprocessing.queues import Queue as MpQueue
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import pytest

from fleet.core.errors import Conflict, InvalidTransition, NotFound, StoreError, UsageError
from fleet.core.gpuspec import mig_unit
from fleet.core.models import (
    TASK_MOVES,
    WORKER_MOVES,
    ExitUsage,
    Runner,
    Script,
    TaskEnd,
    TaskSpec,
    TaskStatus,
    Worker,
    WorkerMode,
    WorkerState,
    check_task_move,
)
from fleet.store import schema
from fleet.store.interface import Store
from fleet.store.sqlite import SQLiteStore
from fleet.store.sqlite_tasks import QUEUE_HEAD
from tests.store.backends import open_target
from tests.threads import at_once

ALL_PAIRS = [(old, new) for old in TaskStatus for new in TaskStatus]
WORKER_PAIRS = [(old, new) for old in WorkerState for new in WorkerState]


def spec(priority: int = 0, gpus: int | None = None, name: str = "") -> TaskSpec:
    return TaskSpec(script=Script(command=["true"], working_dir="."), priority=priority, gpus=gpus, name=name)


def make_worker(wid: str = "w1", gpus: list[int] | None = None, queues: tuple[str, ...] = ("q",)) -> Worker:
    return Worker(
        id=wid,
        host="host",
        mode=WorkerMode.STATIC,
        gpus=gpus,
        queues=list(queues),
        order_fairness=False,
        state=WorkerState.IDLE,
        state_reason="",
        created_at=time.time(),
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "fleet.db"


def _pragma(path: Path, name: str) -> Any:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


def _set_user_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"PRAGMA user_version={version}")
        conn.commit()
    finally:
        conn.close()


def _claim_order(store: Store, worker: Worker, queues: list[str], gpus: list[int]) -> list[str]:
    order = []
    while (task := store.claim_next_task(worker, queues, gpus)) is not None:
        order.append(task.id)
    return order


# -- schema -----------------------------------------------------------------------------


def test_a_claim_reads_the_head_of_its_queue_without_sorting_it(db: Path) -> None:
    """The claim's order has its own index: a claim costs the same with
    10 or 100,000 tasks waiting (it used to sort the whole queue)."""
    SQLiteStore(db).close()
    conn = sqlite3.connect(db)
    try:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + QUEUE_HEAD, ("q", 1))]
    finally:
        conn.close()
    assert any("USING INDEX tasks_queue_head" in step for step in plan), plan
    assert not any("ORDER BY" in step for step in plan), plan


def test_new_database_is_latest_and_wal(db: Path) -> None:
    SQLiteStore(db).close()
    assert _pragma(db, "user_version") == schema.LATEST
    assert _pragma(db, "journal_mode") == "wal"


def test_reopening_is_a_no_op(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = SQLiteStore(db)
    first.create_queue("kept", ["t"], "test")
    first.close()
    schema_version = _pragma(db, "schema_version")
    with caplog.at_level(logging.INFO, logger="fleet.store.sqlite"):
        again = SQLiteStore(db)
    assert [q.name for q in again.list_queues()] == ["kept"]
    again.close()
    assert _pragma(db, "user_version") == schema.LATEST
    assert _pragma(db, "schema_version") == schema_version  # no DDL ran
    assert "migrated" not in caplog.text


def test_newer_schema_is_refused_untouched(db: Path) -> None:
    SQLiteStore(db).close()
    _set_user_version(db, schema.LATEST + 1)
    before = db.read_bytes()
    with pytest.raises(StoreError, match="newer"):
        SQLiteStore(db)
    assert db.read_bytes() == before


def test_newer_schema_in_rollback_journal_mode_is_refused_untouched(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version={schema.LATEST + 1}")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    with pytest.raises(StoreError, match="newer"):
        SQLiteStore(db)
    assert db.read_bytes() == before


# A header that says WAL (file format versions 2/2, page size 4096) and is
# unusable after that (payload fractions 0/0/0): SQLite, even read-only,
# creates the -wal and -shm files of such a file before it refuses it.
# Random bytes after the magic did that in one CI run in about 250.
WAL_THEN_GARBAGE = b"SQLite format 3\x00" + b"\x10\x00\x02\x02\x00" + b"\x00\x00\x00"


@pytest.mark.parametrize(
    "header",
    [b"", b"SQLite format 3\x00", WAL_THEN_GARBAGE],
    ids=["random", "sqlite-header-then-garbage", "wal-header-then-garbage"],
)
def test_not_sqlite_is_refused_untouched(db: Path, header: bytes) -> None:
    before = header + os.urandom(8192)
    db.write_bytes(before)
    with pytest.raises(StoreError):
        SQLiteStore(db)
    assert db.read_bytes() == before
    assert sorted(p.name for p in db.parent.iterdir()) == [db.name]


# -- task moves ---------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), ALL_PAIRS, ids=[f"{o.value}->{n.value}" for o, n in ALL_PAIRS])
def test_check_task_move_matches_table(old: TaskStatus, new: TaskStatus) -> None:
    if new in TASK_MOVES[old]:
        check_task_move("t", old, new)
    else:
        with pytest.raises(InvalidTransition, match=f"{old.value}.*{new.value}"):
            check_task_move("t", old, new)


def _task_in(store: Store, worker: Worker, status: TaskStatus) -> str:
    """A task brought to ``status`` through the public methods."""
    if status == TaskStatus.CREATED:
        return store.create_task(spec(), None, "setup").id
    tid = store.create_task(spec(), "q", "setup").id
    if status == TaskStatus.QUEUED:
        return tid
    claimed = store.claim_next_task(worker, ["q"], [])
    assert claimed is not None and claimed.id == tid
    if status != TaskStatus.IN_PROGRESS:
        store.finish_task(tid, status, exit_code=0, reason="setup", actor="setup")
    return tid


def _move(store: Store, worker: Worker, tid: str, old: TaskStatus, new: TaskStatus) -> tuple[str, str]:
    """Ask for ``old -> new`` the way fleet does; return the expected (actor, reason)."""
    if new == TaskStatus.QUEUED:
        store.enqueue_task(tid, "q", "mover", reason="why")
        return "mover", "why"
    if new == TaskStatus.CREATED:
        store.dequeue_task(tid, "mover")
        return "mover", "dequeued"
    if new == TaskStatus.IN_PROGRESS:
        claimed = store.claim_next_task(worker, ["q"], [])
        if claimed is None:
            raise InvalidTransition("nothing claimable")
        assert claimed.id == tid
        return f"worker:{worker.id}", ""
    if new == TaskStatus.STOPPED and old == TaskStatus.QUEUED:
        store.request_abort(tid, "mover", "why")
        return "mover", "why"
    store.finish_task(tid, new, exit_code=1, reason="why", actor="mover")
    return "mover", "why"


# in_progress -> queued is never asked for directly: a retry or `stop --requeue` ends the
# attempt first (in_progress -> failed/stopped -> queued).  See test_enqueue_refuses_a_running_task.
STORE_PAIRS = [p for p in ALL_PAIRS if p != (TaskStatus.IN_PROGRESS, TaskStatus.QUEUED)]


@pytest.mark.parametrize(("old", "new"), STORE_PAIRS, ids=[f"{o.value}->{n.value}" for o, n in STORE_PAIRS])
def test_task_move_through_store(store: Store, old: TaskStatus, new: TaskStatus) -> None:
    worker = store.register_worker(make_worker(), "test")
    tid = _task_in(store, worker, old)
    assert store.get_task(tid).status == old
    before = (store.get_task(tid), store.events("task", tid), store.attempts(tid))
    if new in TASK_MOVES[old]:
        actor, reason = _move(store, worker, tid, old, new)
        assert store.get_task(tid).status == new
        last = store.events("task", tid)[-1]
        assert (last.old, last.new, last.actor, last.reason) == (old.value, new.value, actor, reason)
        assert len(store.events("task", tid)) == len(before[1]) + 1
    else:
        # dequeue refuses anything not queued with a Conflict (InvalidTransition's base)
        with pytest.raises(Conflict):
            _move(store, worker, tid, old, new)
        assert (store.get_task(tid), store.events("task", tid), store.attempts(tid)) == before


def test_enqueue_refuses_a_running_task(store: Store) -> None:
    worker = store.register_worker(make_worker(), "test")
    tid = _task_in(store, worker, TaskStatus.IN_PROGRESS)
    with pytest.raises(InvalidTransition):
        store.enqueue_task(tid, "q", "api")
    assert store.get_task(tid).status == TaskStatus.IN_PROGRESS
    assert store.claim_next_task(store.register_worker(make_worker("w2"), "test"), ["q"], []) is None


def test_create_records_events(store: Store) -> None:
    tid = store.create_task(spec(), "q", "alice").id
    events = store.events("task", tid)
    assert [(e.old, e.new, e.actor) for e in events] == [(None, "created", "alice"), ("created", "queued", "alice")]


# -- queue order ------------------------------------------------------------------------


def test_fifo_with_priorities(store: Store) -> None:
    worker = store.register_worker(make_worker(), "test")
    a = store.create_task(spec(), "q", "t").id
    b = store.create_task(spec(priority=5), "q", "t").id
    c = store.create_task(spec(), "q", "t").id
    d = store.create_task(spec(priority=5), "q", "t").id
    e = store.create_task(spec(priority=-1), "q", "t").id
    assert _claim_order(store, worker, ["q"], []) == [b, d, a, c, e]


def test_enqueue_head_goes_first(store: Store) -> None:
    worker = store.register_worker(make_worker(), "test")
    a = store.create_task(spec(), "q", "t").id
    b = store.create_task(spec(), "q", "t").id
    late = store.create_task(spec(), None, "t").id
    head = store.create_task(spec(), None, "t").id
    store.enqueue_task(late, "q", "t")
    store.enqueue_task(head, "q", "t", head=True)
    assert _claim_order(store, worker, ["q"], []) == [head, a, b, late]


def test_gpus_needed_filters_static_worker(store: Store) -> None:
    worker = store.register_worker(make_worker(gpus=[0, 1]), "test")
    none = store.create_task(spec(), "q", "t").id
    three = store.create_task(spec(gpus=3), "q", "t").id
    one = store.create_task(spec(gpus=1), "q", "t").id
    two = store.create_task(spec(gpus=2), "q", "t").id
    order = _claim_order(store, worker, ["q"], [0, 1])
    assert order == [none, one, two]
    assert store.get_task(three).status == TaskStatus.QUEUED
    assert store.get_task(one).gpus == [0, 1]


def test_gpus_needed_filters_cpu_worker(store: Store) -> None:
    worker = store.register_worker(make_worker(gpus=None), "test")
    one = store.create_task(spec(gpus=1), "q", "t").id
    none = store.create_task(spec(), "q", "t").id
    zero = store.create_task(spec(gpus=0), "q", "t").id
    assert _claim_order(store, worker, ["q"], []) == [none, zero]
    assert store.get_task(one).status == TaskStatus.QUEUED
    assert store.get_task(none).gpus == []


def test_claim_follows_queue_order(store: Store) -> None:
    store.create_queue("a", [], "t")
    store.create_queue("b", [], "t")
    worker = store.register_worker(make_worker(queues=("a", "b")), "test")
    b1 = store.create_task(spec(priority=9), "b", "t").id
    a1 = store.create_task(spec(), "a", "t").id
    b2 = store.create_task(spec(), "b", "t").id
    a2 = store.create_task(spec(), "a", "t").id
    assert store.claim_next_task(worker, ["a", "b"], []) is not None  # a1
    assert store.claim_next_task(worker, ["b", "a"], []) is not None  # b1
    assert _claim_order(store, worker, ["a", "b", "missing"], []) == [a2, b2]
    assert [store.get_task(t).started_at is not None for t in (a1, b1)] == [True, True]
    assert store.get_task(a1).started_at <= store.get_task(b1).started_at  # type: ignore[operator]
    assert store.claim_next_task(worker, [], []) is None


def test_no_claim_with_a_drained_gpu_and_the_end_it_carries_still_lands(store: Store) -> None:
    """The claim checks the drains itself (the worker reads none before it)."""
    whole = store.register_worker(make_worker("w1", gpus=[1]), "test")
    mig = store.register_worker(make_worker("w2", gpus=[mig_unit(2, 3)]), "test")
    first, second = (store.create_task(spec(), "q", "t").id for _ in range(2))
    claimed = store.claim_next_task(whole, ["q"], [1])
    assert claimed is not None and claimed.id == first
    store.drain_gpu("host", 1, "fan", "manual", "t")
    store.drain_gpu("elsewhere", 2, "other host", "manual", "t")  # another host's GPU 2: not w2's
    end = TaskEnd(first, TaskStatus.COMPLETED, exit_code=0, reason="exit 0", actor="worker:w1", attempt=1)
    assert store.claim_next_task(whole, ["q"], [1], ended=end) is None
    assert store.get_task(first).status == TaskStatus.COMPLETED  # recorded, though nothing was claimed
    store.drain_gpu("host", 2, "ECC", "manual", "t")  # the GPU w2's MIG slice is on
    assert store.claim_next_task(mig, ["q"], [mig_unit(2, 3)]) is None
    assert store.get_task(second).status == TaskStatus.QUEUED
    store.undrain_gpu("host", 1, "t")
    again = store.claim_next_task(whole, ["q"], [1])
    assert again is not None and again.id == second


# -- finish, abort, dequeue, delete -------------------------------------------------------


def test_finish_requeue_tail_keeps_attempts(store: Store) -> None:
    worker = store.register_worker(make_worker(), "test")
    t1 = store.create_task(spec(), "q", "t").id
    t2 = store.create_task(spec(), "q", "t").id
    assert store.claim_next_task(worker, ["q"], []) is not None
    task = store.finish_task(t1, TaskStatus.FAILED, exit_code=1, reason="boom", actor="w", requeue="tail")
    assert (task.status, task.attempt, task.exit_code) == (TaskStatus.QUEUED, 1, 1)
    assert _claim_order(store, worker, ["q"], []) == [t2, t1]
    assert store.get_task(t1).attempt == 2
    store.finish_task(t1, TaskStatus.COMPLETED, exit_code=0, reason="", actor="w")
    rows = [(r.attempt, r.status.value, r.exit_code, r.reason, r.worker) for r in store.attempts(t1)]
    assert rows == [(1, "failed", 1, "boom", "w1"), (2, "completed", 0, "", "w1")]
    moves = [(e.old, e.new, e.reason) for e in store.events("task", t1)][-4:]
    assert moves == [
        ("in_progress", "failed", "boom"),
        ("failed", "queued", "requeued after attempt 1: boom"),
        ("queued", "in_progress", ""),
        ("in_progress", "completed", ""),
    ]


def test_finish_requeue_head_goes_first(store: Store) -> None:
    worker = store.register_worker(make_worker(), "test")
    t1, t2, t3 = (store.create_task(spec(), "q", "t").id for _ in range(3))
    assert store.claim_next_task(worker, ["q"], []) is not None
    store.finish_task(t1, TaskStatus.STOPPED, exit_code=None, reason="worker stop", actor="w", requeue="head")
    assert _claim_order(store, worker, ["q"], []) == [t1, t2, t3]
    assert [r.status.value for r in store.attempts(t1)] == ["stopped", "in_progress"]


def test_a_claim_records_the_last_tasks_end_in_its_own_transaction(store: Store) -> None:
    """A static worker's next claim carries its last task's end: one
    transaction records the end (with the pid it never wrote) and claims."""
    worker = store.register_worker(make_worker(), "test")
    first, second = (store.create_task(spec(), "q", "t").id for _ in range(2))
    assert store.claim_next_task(worker, ["q"], [], busy="running {task}") is not None
    end = TaskEnd(first, TaskStatus.COMPLETED, 0, "", "worker:w1", usage=ExitUsage(5.0, 0.25), pid=4321)
    claimed = store.claim_next_task(worker, ["q"], [], busy="running {task}", ended=end)
    assert claimed is not None and claimed.id == second
    done = store.get_task(first)
    assert (done.status, done.exit_code, done.pid) == (TaskStatus.COMPLETED, 0, 4321)
    assert [(a.status, a.peak_rss_mb, a.cpu_s) for a in store.attempts(first)] == [(TaskStatus.COMPLETED, 5.0, 0.25)]
    assert store.get_task(second).status == TaskStatus.IN_PROGRESS
    assert store.get_worker("w1").state_reason == f"running {second}"
    last = TaskEnd(second, TaskStatus.COMPLETED, 0, "", "worker:w1")
    assert store.claim_next_task(worker, ["q"], [], ended=last) is None  # nothing waits: the end lands all the same
    assert store.get_task(second).status == TaskStatus.COMPLETED


def test_a_claim_whose_end_is_refused_writes_nothing(store: Store) -> None:
    """An end the store refuses (the task was changed behind the worker's
    back) leaves the claim undone too: the worker claims again alone."""
    worker = store.register_worker(make_worker(), "test")
    first, second = (store.create_task(spec(), "q", "t").id for _ in range(2))
    store.request_abort(first, "bob", "not needed")  # stopped while queued: never ran
    end = TaskEnd(first, TaskStatus.COMPLETED, 0, "", "worker:w1")
    with pytest.raises(InvalidTransition):
        store.claim_next_task(worker, ["q"], [], ended=end)
    assert store.get_task(first).status == TaskStatus.STOPPED
    assert store.get_task(second).status == TaskStatus.QUEUED  # not claimed
    claimed = store.claim_next_task(worker, ["q"], [])
    assert claimed is not None and claimed.id == second


def test_a_claim_may_take_the_task_its_end_put_back(store: Store) -> None:
    """An end that puts its task back at the head of its queue (a worker
    stop with requeue, a retry) is in the claim's transaction: the same
    claim may take it again, as a new attempt."""
    worker = store.register_worker(make_worker(), "test")
    t1, t2 = (store.create_task(spec(), "q", "t").id for _ in range(2))
    assert store.claim_next_task(worker, ["q"], []) is not None
    end = TaskEnd(t1, TaskStatus.FAILED, 1, "boom", "worker:w1", requeue="head")
    again = store.claim_next_task(worker, ["q"], [], ended=end)
    assert again is not None and (again.id, again.attempt) == (t1, 2)
    assert [a.status for a in store.attempts(t1)] == [TaskStatus.FAILED, TaskStatus.IN_PROGRESS]
    assert store.get_task(t2).status == TaskStatus.QUEUED


def test_request_abort_queued_stops_at_once(store: Store) -> None:
    tid = store.create_task(spec(), "q", "t").id
    task = store.request_abort(tid, "bob", "not needed")
    assert task.status == TaskStatus.STOPPED and task.finished_at is not None
    assert store.get_task(tid).status == TaskStatus.STOPPED
    last = store.events("task", tid)[-1]
    assert (last.old, last.new, last.actor, last.reason) == ("queued", "stopped", "bob", "not needed")
    assert store.attempts(tid) == []


def test_request_abort_running_sets_flag(store: Store) -> None:
    worker = store.register_worker(make_worker(), "test")
    tid = _task_in(store, worker, TaskStatus.IN_PROGRESS)
    task = store.request_abort(tid, "bob", "too slow")
    assert (task.status, task.abort_requested) == (TaskStatus.IN_PROGRESS, "too slow")
    assert store.get_task(tid).abort_requested == "too slow"
    last = store.events("task", tid)[-1]
    assert (last.new, last.actor, last.reason) == ("abort_requested", "bob", "too slow")


@pytest.mark.parametrize("status", [TaskStatus.CREATED, TaskStatus.COMPLETED])
def test_request_abort_refuses_idle_tasks(store: Store, status: TaskStatus) -> None:
    tid = _task_in(store, store.register_worker(make_worker(), "test"), status)
    with pytest.raises(Conflict):
        store.request_abort(tid, "bob", "x")
    assert store.get_task(tid).status == status


def test_dequeue(store: Store) -> None:
    worker = store.register_worker(make_worker(), "test")
    tid = store.create_task(spec(), "q", "t").id
    task = store.dequeue_task(tid, "bob")
    assert (task.status, task.queued_at) == (TaskStatus.CREATED, None)
    assert store.claim_next_task(worker, ["q"], []) is None
    assert store.get_queue("q").pending == 0
    with pytest.raises(Conflict):
        store.dequeue_task(tid, "bob")


def test_delete_queue_refuses_queued_tasks_unless_forced(store: Store) -> None:
    tid = store.create_task(spec(), "q", "t").id
    with pytest.raises(Conflict, match="1 queued"):
        store.delete_queue("q", "bob")
    assert store.get_queue("q").pending == 1
    store.delete_queue("q", "bob", force=True)
    with pytest.raises(NotFound):
        store.get_queue("q")
    assert store.get_task(tid).status == TaskStatus.CREATED
    store.create_queue("empty", [], "t")
    store.delete_queue("empty", "bob")
    assert store.list_queues() == []


def test_forced_delete_queue_records_task_events(store: Store) -> None:
    tid = store.create_task(spec(), "q", "t").id
    store.delete_queue("q", "bob", force=True)
    last = store.events("task", tid)[-1]
    assert (last.old, last.new, last.actor) == ("queued", "created", "bob")


def test_task_id_prefixes(store: Store) -> None:
    ids = [store.create_task(spec(), None, "t").id for _ in range(17)]  # 17 > 16: two share a first digit
    for tid in ids:
        assert store.get_task(tid[:8]).id == tid
        assert store.get_task(tid).id == tid
    with pytest.raises(UsageError, match="too short"):
        store.get_task(ids[0][:3])
    seen: dict[str, str] = {t[:4]: t for t in ids}
    while True:  # about 300 random ids until two share their first 4 characters
        extra = store.create_task(spec(), None, "t").id
        if extra[:4] in seen:
            break
        seen[extra[:4]] = extra
    with pytest.raises(UsageError, match="ambiguous"):
        store.get_task(extra[:4])
    unused = next(p for p in (f"{n:04x}" for n in range(65536)) if not any(t.startswith(p) for t in ids))
    with pytest.raises(NotFound):
        store.get_task(unused)
    with pytest.raises(NotFound):
        store.get_task("f" * 32)
    # the other public methods resolve prefixes the same way
    assert store.enqueue_task(ids[0][:10], "q", "t").id == ids[0]
    assert store.attempts(ids[0][:10]) == []
    assert store.dequeue_task(ids[0][:10], "t").status == TaskStatus.CREATED


# -- workers ------------------------------------------------------------------------------


def test_worker_register_and_revive(store: Store) -> None:
    worker = store.register_worker(make_worker(gpus=[0]), "mgr")
    assert (worker.state, worker.gpus, worker.queues) == (WorkerState.IDLE, [0], ["q"])
    store.set_worker_state("w1", WorkerState.DEAD, "crashed", "mgr")
    assert store.list_workers() == []
    assert [w.id for w in store.list_workers(include_dead=True)] == ["w1"]
    revived = store.register_worker(make_worker(gpus=[0]), "mgr")
    assert revived.state == WorkerState.IDLE
    events = [(e.old, e.new, e.actor, e.reason) for e in store.events("worker", "w1")]
    assert events == [
        (None, "idle", "mgr", "created"),
        ("idle", "dead", "mgr", "crashed"),
        ("dead", "idle", "mgr", "started again"),
    ]


def test_worker_stopping_cannot_go_idle(store: Store) -> None:
    store.register_worker(make_worker(), "mgr")
    store.set_worker_state("w1", WorkerState.STOPPING, "stop", "mgr")
    with pytest.raises(InvalidTransition, match="stopping"):
        store.set_worker_state("w1", WorkerState.IDLE, "back", "mgr")
    with pytest.raises(InvalidTransition):
        store.register_worker(make_worker(), "mgr")
    assert store.get_worker("w1").state == WorkerState.STOPPING


@pytest.mark.parametrize(("old", "new"), WORKER_PAIRS, ids=[f"{o.value}->{n.value}" for o, n in WORKER_PAIRS])
def test_worker_moves_through_store(store: Store, old: WorkerState, new: WorkerState) -> None:
    store.register_worker(make_worker(), "mgr")
    if old != WorkerState.IDLE:
        store.set_worker_state("w1", old, "setup", "mgr")
    before = (store.get_worker("w1"), store.events("worker", "w1"))
    if new == old or new in WORKER_MOVES[old]:
        assert store.set_worker_state("w1", new, "why", "bob", last_seen=1.0).state == new
        last = store.events("worker", "w1")[-1]
        assert (last.old, last.new, last.actor, last.reason) == (old.value, new.value, "bob", "why")
    else:
        with pytest.raises(InvalidTransition):
            store.set_worker_state("w1", new, "why", "bob")
        assert (store.get_worker("w1"), store.events("worker", "w1")) == before


# -- concurrency: every task handed out exactly once ------------------------------------------

N_TASKS = 2000
N_PROCS = 8


def _claim_loop(path: str, wid: str, ready: MpQueue[str], go: MpEvent, results: MpQueue[tuple[str, list[str]]]) -> None:
    store = open_target(path)
    worker = store.register_worker(make_worker(wid), wid)
    ready.put(wid)
    go.wait(30)
    claimed: list[str] = []
    while (task := store.claim_next_task(worker, ["q"], [])) is not None:
        claimed.append(task.id)
        store.finish_task(task.id, TaskStatus.COMPLETED, exit_code=0, reason="", actor=wid)
    store.close()
    results.put((wid, claimed))


@pytest.mark.timeout(120)
def test_concurrent_claims_hand_out_each_task_once(store: Store, store_target: str) -> None:
    ids = {store.create_task(spec(), "q", "t").id for _ in range(N_TASKS)}
    ctx = multiprocessing.get_context("spawn")
    ready: MpQueue[str] = ctx.Queue()
    results: MpQueue[tuple[str, list[str]]] = ctx.Queue()
    go = ctx.Event()
    procs = [
        ctx.Process(target=_claim_loop, args=(store_target, f"w{i}", ready, go, results), daemon=True)
        for i in range(N_PROCS)
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=60)
        go.set()
        claims = dict(results.get(timeout=90) for _ in procs)
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0] * N_PROCS
    everything = [tid for got in claims.values() for tid in got]
    assert len(everything) == len(set(everything)) == N_TASKS
    assert set(everything) == ids
    assert sum(1 for got in claims.values() if got) > 1  # the processes really did compete
    done, total = store.list_tasks(status=[TaskStatus.COMPLETED], limit=N_TASKS + 1)
    assert total == N_TASKS
    assert all(t.attempt == 1 for t in done)
    owner = {tid: wid for wid, got in claims.items() for tid in got}
    assert all(t.worker == owner[t.id] for t in done)
    starts = [e.subject for e in store.events("task", limit=10 * N_TASKS) if e.new == "in_progress"]
    assert sorted(starts) == sorted(ids)


def test_start_task_starts_any_task_not_running_and_keeps_its_queue(store: Store) -> None:
    """``execute`` and the remote executor: one transaction, the task's queue kept
    (a failed attempt can be retried there), nothing left behind."""
    executor = make_worker("box:image", gpus=[0, 1], queues=())
    queued = store.create_task(spec(), "q", "t")
    created = store.create_task(spec(gpus=2), None, "t")
    started = store.start_task(queued.id, executor, [0], "t", Runner.REMOTE)
    assert (started.status, started.queue, started.worker, started.attempt) == (
        TaskStatus.IN_PROGRESS,
        "q",
        "box:image",
        1,
    )
    assert store.claim_next_task(make_worker(), ["q"], []) is None  # it left the queue for good
    with pytest.raises(Conflict, match="is running on box:image"):
        store.start_task(queued.id, executor, [0], "t", Runner.REMOTE)
    with pytest.raises(Conflict, match="needs 2 GPU\\(s\\); 1 given"):
        store.start_task(created.id, executor, [0], "t", Runner.REMOTE)
    assert store.get_task(created.id).status == TaskStatus.CREATED  # a refused start changes nothing
    store.finish_task(started.id, TaskStatus.FAILED, exit_code=1, reason="x", actor="t", requeue="tail")
    again = store.get_task(started.id)
    assert (again.status, again.queue) == (TaskStatus.QUEUED, "q")
    ended = store.start_task(created.id, executor, [0, 1], "t", Runner.REMOTE)
    assert ended.gpus == [0, 1] and ended.queue is None
    assert [q.name for q in store.list_queues()] == ["q"]


def test_a_claim_makes_its_worker_busy_in_the_same_transaction(store: Store) -> None:
    worker = store.register_worker(make_worker(), "t")
    first, second = (store.create_task(spec(), "q", "t").id for _ in range(2))
    task = store.claim_next_task(worker, ["q"], [], busy="running {task}")
    assert task is not None and task.id == first
    busy = store.get_worker("w1")
    assert (busy.state, busy.state_reason) == (WorkerState.BUSY, f"running {first}")
    assert [e.reason for e in store.events("worker", "w1")][-1] == f"running {first}"
    store.set_worker_state("w1", WorkerState.STOPPING, "stop", "t")
    again = store.claim_next_task(worker, ["q"], [], busy="running {task}")  # a stopping worker is left as it is
    assert again is not None and again.id == second
    assert store.get_worker("w1").state == WorkerState.STOPPING
    third = store.create_task(spec(), "q", "t").id
    unregistered = store.claim_next_task(make_worker("nobody"), ["q"], [], busy="x")  # no row: none to change
    assert unregistered is not None and unregistered.id == third


def test_pools_claiming_one_task_by_id_at_once_hand_it_to_one(store: Store) -> None:
    """A dynamic pool claims by id after choosing GPUs: of several claiming the
    same task at once (threads, each on its own connection), exactly one gets it."""
    pools = [
        store.register_worker(replace(make_worker(f"box:pool{n}", gpus=[0, 1]), mode=WorkerMode.DYNAMIC), "t")
        for n in range(6)
    ]
    for _ in range(5):
        task_id = store.create_task(spec(), "q", "t").id
        won: list[str] = []

        def claim(n: int, task_id: str = task_id, won: list[str] = won) -> None:
            if store.claim_task(task_id, pools[n], [0], f"box:pool{n}:gpu0") is not None:
                won.append(pools[n].id)

        at_once(claim, len(pools))
        assert len(won) == 1
        task = store.get_task(task_id)
        assert (task.status, task.owner, task.attempt) == (TaskStatus.IN_PROGRESS, won[0], 1)


def test_hosts_creating_one_queue_at_once_make_one(store: Store) -> None:
    made: list[str] = []
    refused: list[str] = []

    def create(n: int) -> None:
        try:
            store.create_queue("shared", [f"t{n}"], f"host{n}")
            made.append(f"host{n}")
        except Conflict:
            refused.append(f"host{n}")

    at_once(create, 4)
    assert len(made) == 1 and len(refused) == 3
    assert [e.actor for e in store.events("queue", "shared")] == made
    assert store.get_queue("shared").tags == [f"t{made[0][4:]}"]
