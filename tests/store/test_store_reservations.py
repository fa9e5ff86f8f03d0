"""GPUs a dynamic pool holds idle for a waiting task: one holder per task across
pools and hosts, on both stores (``store``: SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from fleet.core.models import Script, TaskSpec, TaskStatus, Worker, WorkerMode, WorkerState
from fleet.store.interface import Store
from tests.store.backends import raw_count, raw_execute
from tests.store.test_store import make_worker
from tests.threads import at_once


def quad() -> TaskSpec:
    return TaskSpec(script=Script(command=["true"], working_dir="."), gpus=4)


def pool(store: Store, host: str, name: str = "dgpu") -> Worker:
    worker = replace(make_worker(f"{host}:{name}", gpus=[0, 1, 2, 3]), host=host, mode=WorkerMode.DYNAMIC)
    return store.register_worker(worker, "test")


def rows(store_target: str) -> int:
    """Reservation rows as stored (stale ones too)."""
    return raw_count(store_target, "gpu_reservations")


def test_pools_of_many_hosts_reserving_one_task_at_once_give_it_one_holder(store: Store) -> None:
    pools = [pool(store, f"host{n}") for n in range(6)]
    for _ in range(5):
        task_id = store.create_task(quad(), "q", "t").id
        got: dict[str, str | None] = {}

        def reserve(n: int, task_id: str = task_id, got: dict[str, str | None] = got) -> None:
            held = store.reserve_gpus(pools[n], task_id, 4, [n % 4])
            got[pools[n].id] = held.worker if held is not None else None

        at_once(reserve, len(pools))
        holders = set(got.values())
        assert len(holders) == 1  # every pool was told the same one holder
        (holder,) = holders
        assert holder is not None
        assert [(r.task_id, r.worker) for r in store.gpu_reservations() if r.task_id == task_id] == [(task_id, holder)]
        events = store.events("reservation", task_id)
        assert [(e.new, e.actor) for e in events] == [(holder, f"worker:{holder}")]
        assert f"on {holder.split(':')[0]} for a task needing 4" in events[0].reason


def test_a_pool_holds_one_reservation_and_updates_it_in_place(store: Store) -> None:
    p0, p1 = pool(store, "host0"), pool(store, "host1")
    first, second = (store.create_task(quad(), "q", "t").id for _ in range(2))
    held = store.reserve_gpus(p0, first, 4, [])
    assert held is not None and (held.worker, held.host, held.need, held.gpus) == (p0.id, "host0", 4, ())
    again = store.reserve_gpus(p0, first, 4, [2, 3])  # GPUs freed up: the same reservation holds them
    assert again is not None and again.gpus == (2, 3) and again.at == held.at
    assert len(store.events("reservation", first)) == 1  # no event for an update
    other = store.reserve_gpus(p1, first, 4, [0])
    assert other is not None and other.worker == p0.id and other.gpus == (2, 3)  # p1 learns who holds it
    moved = store.reserve_gpus(p0, second, 4, [2, 3])  # p0 now holds for another task: the first is free
    assert moved is not None and moved.worker == p0.id
    assert [(r.task_id, r.worker) for r in store.gpu_reservations()] == [(second, p0.id)]
    assert store.events("reservation", first)[-1].new == "released"  # the latest
    took = store.reserve_gpus(p1, first, 4, [0])
    assert took is not None and took.worker == p1.id


@pytest.mark.parametrize("end", ["claim_task", "claim_next_task", "abort", "dequeue"])
def test_a_reservation_ends_when_its_task_leaves_the_queue(store: Store, store_target: str, end: str) -> None:
    p0, p1 = pool(store, "host0"), pool(store, "host1")
    task_id = store.create_task(quad(), "q", "t").id
    assert store.reserve_gpus(p0, task_id, 4, [1]) is not None
    if end == "claim_task":  # another host's pool found four GPUs free first
        assert store.claim_task(task_id, p1, [0, 1, 2, 3], "host1:gpu0-3") is not None
    elif end == "claim_next_task":
        assert store.claim_next_task(make_worker("host1:gpu0-3", gpus=[0, 1, 2, 3]), ["q"], [0, 1, 2, 3]) is not None
    elif end == "abort":
        store.request_abort(task_id, "t", "no longer wanted")
    else:
        store.dequeue_task(task_id, "t")
    assert store.gpu_reservations() == []
    assert rows(store_target) == 0  # deleted in the same transaction, not only hidden
    assert store.reserve_gpus(p0, task_id, 4, [1]) is None  # a task not queued cannot be reserved
    assert rows(store_target) == 0


def test_a_dead_pool_holds_nothing_and_a_lost_hosts_reservations_are_dropped(store: Store, store_target: str) -> None:
    p0, p1, p2 = pool(store, "host0"), pool(store, "host1"), pool(store, "host1", "dgpu2")
    a, b, c = (store.create_task(quad(), "q", "t").id for _ in range(3))
    for worker, task_id in ((p0, a), (p1, b), (p2, c)):
        assert store.reserve_gpus(worker, task_id, 4, []) is not None
    store.set_worker_state(p0.id, WorkerState.DEAD, "stopped", "test")
    assert {r.worker for r in store.gpu_reservations()} == {p1.id, p2.id}
    assert store.events("reservation", a)[-1].new == "released"  # the latest
    assert store.drop_reservations(host="host1", actor="manager:host2", reason="host host1 lost") == 2
    assert store.gpu_reservations() == [] and rows(store_target) == 0
    assert store.events("reservation", b)[-1].reason == "host host1 lost"
    assert store.drop_reservations(worker=p1.id, actor="t", reason="x") == 0
    # a row left by a pool that is gone (its host lost before any sweep ran) counts for nothing
    raw_execute(
        store_target,
        "INSERT INTO gpu_reservations (task_id, worker, host, need, gpus, at) VALUES (?,?,?,?,?,?)",
        (a, "host9:dgpu", "host9", 4, "[]", 0.0),
    )
    assert store.gpu_reservations() == []
    took = store.reserve_gpus(p1, a, 4, [3])
    assert took is not None and took.worker == p1.id


def test_peek_passes_over_the_tasks_reserved_elsewhere(store: Store) -> None:
    first, second = (store.create_task(quad(), "q", "t").id for _ in range(2))
    assert store.peek_tasks({"q": None})["q"].id == first
    assert store.peek_tasks({"q": None}, exclude=[first])["q"].id == second
    assert store.peek_tasks({"q": 4}, exclude=[first, second]) == {}


def test_reserving_and_claiming_one_task_at_once_never_leave_a_reservation_behind(
    store: Store, store_target: str
) -> None:
    """The reservation locks the task's row: a claim racing with it either ends it
    or finds the task taken, never leaving a row for a task that is running."""
    holders = [pool(store, f"host{n}") for n in range(3)]
    claimer = pool(store, "host9")
    for _ in range(10):
        task_id = store.create_task(quad(), "q", "t").id
        barrier = threading.Barrier(4)

        def race(n: int, task_id: str = task_id, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            if n == 3:
                store.claim_task(task_id, claimer, [0, 1, 2, 3], "host9:gpu0-3")
            else:
                store.reserve_gpus(holders[n], task_id, 4, [])

        at_once(race, 4)
        assert store.get_task(task_id).status == TaskStatus.IN_PROGRESS
        assert rows(store_target) == 0
