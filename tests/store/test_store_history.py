"""The history reads (the report's and ``/metrics``') on both stores: workers
ever registered, each worker's state changes in a window with its last one
before, the attempts overlapping a window with when each was queued, ended
counts, the longest wait per queue, and the event record."""

from __future__ import annotations

import time
from dataclasses import replace

from fleet.core.models import TaskStatus, WorkerState
from fleet.store.interface import Store
from tests.store.backends import is_pg
from tests.store.test_store import make_worker, spec


def test_history_reads(store: Store, store_target: str) -> None:
    target = store_target
    before = time.time()
    worker = store.register_worker(make_worker("box:gpu0", gpus=[0]), "t")
    store.register_worker(make_worker("box:cpu"), "t")
    store.set_worker_state("box:gpu0", WorkerState.PAUSED, "downtime", "t")
    store.set_worker_state("box:gpu0", WorkerState.IDLE, "uptime", "t")
    since = time.time()
    time.sleep(0.01)
    done, failed, waiting = (store.create_task(replace(spec(), user="ann"), "q", "ann").id for _ in range(3))
    claimed = store.claim_next_task(worker, ["q"], [0], busy="running {task}")
    assert claimed is not None and claimed.id == done
    store.finish_task(done, TaskStatus.COMPLETED, exit_code=0, reason="", actor="t")
    again = store.claim_next_task(worker, ["q"], [0])
    assert again is not None and again.id == failed
    store.finish_task(failed, TaskStatus.FAILED, exit_code=1, reason="boom", actor="t")
    until = time.time() + 1

    units = {w.id: w for w in store.worker_units()}
    assert units["box:gpu0"].gpus == (0,) and units["box:cpu"].gpus == ()
    assert units["box:gpu0"].mode == "static" and units["box:gpu0"].host == "host"

    changes = store.worker_state_changes(since, until)
    first = [c for c in changes if c.at < since]  # each worker's last change before the window
    assert sorted((c.worker, c.state) for c in first) == [("box:cpu", "idle"), ("box:gpu0", "idle")]
    inside = [(c.worker, c.state) for c in changes if c.at >= since]
    assert inside == [("box:gpu0", "busy")]
    assert store.worker_state_changes(before - 10, before - 5) == []

    attempts = sorted(store.attempts_between(since, until), key=lambda a: a.started_at)
    assert [(a.task, a.status, a.user, a.queue, a.owner) for a in attempts] == [
        (done, "completed", "ann", "q", "box:gpu0"),
        (failed, "failed", "ann", "q", "box:gpu0"),
    ]
    assert all(a.queued_at is not None and a.queued_at <= a.started_at for a in attempts)
    assert store.attempts_between(until, until + 10) == []
    assert store.ended_counts() == {"completed": 1, "failed": 1}
    latencies = store.dispatch_latencies(0)[1]
    # PostgreSQL's cursor waits until no claim on another host can still commit before these
    assert len(latencies) == (0 if is_pg(target) else 2) and all(v >= 0 for v in latencies)

    waits = store.queue_waiting_since()
    assert set(waits) == {"q"} and since <= waits["q"] <= until
    assert store.get_task(waiting).status == TaskStatus.QUEUED
    events = store.events("task", done)
    assert [e.new for e in events] == ["created", "queued", "in_progress", "completed"]
    assert [e.reason for e in store.events("worker", "box:gpu0")][-1] == f"running {done}"
    assert len(store.events(limit=2)) == 2
