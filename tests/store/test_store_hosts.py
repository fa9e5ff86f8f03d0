"""Hosts and their leases, on both stores: registration, renewal, expiry
(the lease clock driven through ``now``: no sleeps), a lost host declared by
exactly one caller with its attempts ended and retried, its workers lost;
and fencing: an attempt taken from a lost host records nothing."""

from __future__ import annotations

import threading

import pytest

from fleet.core.errors import Fenced, HostLost, NotFound
from fleet.core.hosts import HostInfo, HostState
from fleet.core.models import Script, TaskSpec, TaskStatus, Worker, WorkerState
from fleet.store.interface import Store
from tests.factories import live_worker
from tests.store.backends import open_target

T0 = 1_000_000.0
LEASE = 30.0


def _register(store: Store, name: str, now: float = T0) -> None:
    store.register_host(name, HostInfo([0, 1], "1.0", f"http://{name}:1", 42), lease_seconds=LEASE, now=now)


def _worker(store: Store, host: str, gpus: list[int] | None = None) -> Worker:
    return store.register_worker(live_worker(f"{host}:cpu", gpus, ["q"], host=host), "test")


def _submit(store: Store, retries: int = 0) -> str:
    spec = TaskSpec(script=Script(command=["true"], working_dir="/"), name="t", retries=retries)
    return store.create_task(spec, "q", "test").id


def test_a_host_registers_renews_and_leaves(store: Store) -> None:
    _register(store, "a")
    (row,) = store.list_hosts(now=T0 + 5)
    assert (row.name, row.state, row.epoch, row.gpus, row.api_url) == ("a", HostState.UP, 1, [0, 1], "http://a:1")
    assert row.lease_age == pytest.approx(5.0) and not row.expired
    renewed = store.renew_host("a", now=T0 + 20)
    assert renewed.renewed_at == pytest.approx(T0 + 20)
    assert store.list_hosts(now=T0 + 40)[0].lease_age == pytest.approx(20.0)
    assert store.list_hosts(now=T0 + 51)[0].expired
    store.leave_host("a", "test", now=T0 + 21)
    assert store.list_hosts(now=T0 + 999)[0].state == HostState.LEFT
    assert store.declare_lost_hosts("b", now=T0 + 999) == []  # a host that left is never lost
    with pytest.raises(NotFound):
        store.renew_host("a", now=T0 + 22)
    with pytest.raises(NotFound):
        store.renew_host("nobody")
    _register(store, "a", now=T0 + 30)
    assert store.list_hosts(now=T0 + 30)[0].epoch == 2  # a registration is a new epoch


def test_the_lease_clock_is_the_stores_own_when_not_given(store: Store) -> None:
    store.register_host("a", HostInfo([], "1", "", 1), lease_seconds=LEASE)
    (row,) = store.list_hosts()
    assert 0 <= row.lease_age < LEASE and not row.expired
    assert store.declare_lost_hosts("b") == []


def test_an_expired_host_is_declared_lost_with_its_attempts_and_workers(store: Store) -> None:
    _register(store, "a")
    _register(store, "b")
    worker_a, worker_b = _worker(store, "a", [0]), _worker(store, "b", [0])
    retried, ended = _submit(store, retries=1), _submit(store, retries=0)
    first = store.claim_next_task(worker_a, ["q"], [0], "running {task}")
    second = store.claim_next_task(worker_a, ["q"], [0])
    assert first is not None and second is not None and {first.id, second.id} == {retried, ended}
    store.renew_host("b", now=T0 + 25)
    assert store.declare_lost_hosts("b", now=T0 + LEASE) == []  # not past the lease yet
    # the host itself never declares itself lost
    assert store.declare_lost_hosts("a", now=T0 + LEASE + 1) == []
    (lost,) = store.declare_lost_hosts("b", now=T0 + LEASE + 1)
    assert lost.name == "a" and lost.workers == ["a:cpu"]
    assert sorted(lost.failed) == sorted([retried, ended]) and lost.requeued == [retried]
    hosts = {h.name: h for h in store.list_hosts(now=T0 + LEASE + 1)}
    assert hosts["a"].state == HostState.LOST and hosts["a"].lost_by == "b"
    assert hosts["b"].state == HostState.UP  # its own lease was renewed
    assert store.get_worker("a:cpu").state == WorkerState.LOST
    assert store.get_worker("a:cpu").state_reason == "host a lost"
    assert store.get_worker("b:cpu").state == WorkerState.IDLE
    again, gone = store.get_task(retried), store.get_task(ended)
    assert (again.status, again.status_reason) == (TaskStatus.QUEUED, "requeued after attempt 1: host a lost")
    assert (gone.status, gone.status_reason) == (TaskStatus.FAILED, "host a lost")
    (attempt,) = store.attempts(ended)
    assert (attempt.status, attempt.reason) == (TaskStatus.FAILED, "host a lost")
    events = [(e.old, e.new, e.reason) for e in store.events(kind="task", subject=retried)]
    assert ("in_progress", "failed", "host a lost") in events
    assert ("failed", "queued", "requeued after attempt 1: host a lost") in events
    assert [e.new for e in store.events(kind="host", subject="a")] == ["up", "lost"]
    # declared once: nothing more to do next time
    assert store.declare_lost_hosts("b", now=T0 + LEASE + 50) == []
    # the retried task runs on the surviving host, as attempt 2
    moved = store.claim_next_task(worker_b, ["q"], [0])
    assert moved is not None and (moved.id, moved.attempt, moved.host) == (retried, 2, "b")


def test_a_lost_host_learns_it_on_renewal_and_its_workers_claim_nothing(store: Store) -> None:
    _register(store, "a")
    _register(store, "b", now=T0 + 100)
    worker_a = _worker(store, "a")
    store.declare_lost_hosts("b", now=T0 + 100)
    with pytest.raises(HostLost, match="host a was declared lost by b"):
        store.renew_host("a", now=T0 + 101)
    _submit(store)
    # the frozen host's worker wakes up and tries to claim: nothing for a lost worker
    assert store.claim_next_task(worker_a, ["q"], [], "running {task}") is None
    assert store.claim_task(_submit(store), worker_a, [], "a:cpu:x") is None
    # nor can it move its own row out of lost
    with pytest.raises(Exception, match="cannot become idle"):
        store.set_worker_state("a:cpu", WorkerState.IDLE, "waiting", "worker:a:cpu")
    # its manager registers the host again (a new epoch) and restarts its workers
    _register(store, "a", now=T0 + 102)
    assert store.list_hosts(now=T0 + 102)[0].epoch == 2
    back = store.register_worker(worker_a, "manager")
    assert back.state == WorkerState.IDLE
    assert store.claim_next_task(back, ["q"], []) is not None


def test_an_attempt_taken_from_a_lost_host_records_nothing(store: Store) -> None:
    _register(store, "a")
    _register(store, "b", now=T0 + 100)
    worker_a, worker_b = _worker(store, "a"), _worker(store, "b")
    task_id = _submit(store, retries=1)
    stale = store.claim_next_task(worker_a, ["q"], [])
    assert stale is not None and stale.attempt == 1
    store.set_task_process(task_id, 1234, None, attempt=1)  # while it owns the task: written
    store.declare_lost_hosts("b", now=T0 + 100)
    moved = store.claim_next_task(worker_b, ["q"], [])
    assert moved is not None and moved.attempt == 2
    store.set_task_process(task_id, 999, None, attempt=2)
    # the frozen host comes back: each of its runner's writes is refused and changes nothing
    with pytest.raises(Fenced, match="attempt 1 no longer owns it"):
        store.set_task_process(task_id, 4321, None, attempt=1)
    with pytest.raises(Fenced):
        store.record_environment(task_id, True, ["x==1"], "pip", "3.11", attempt=1)
    with pytest.raises(Fenced):
        store.finish_task(task_id, TaskStatus.COMPLETED, exit_code=0, reason="", actor="worker:a:cpu", attempt=1)
    row = store.get_task(task_id)
    assert (row.status, row.attempt, row.host, row.pid, row.env_cached) == (TaskStatus.IN_PROGRESS, 2, "b", 999, False)
    # the owner records its end; a late write of the stale attempt still changes nothing
    store.finish_task(task_id, TaskStatus.COMPLETED, exit_code=0, reason="", actor="worker:b:cpu", attempt=2)
    with pytest.raises(Fenced):
        store.finish_task(task_id, TaskStatus.FAILED, exit_code=1, reason="x", actor="worker:a:cpu", attempt=1)
    done = store.get_task(task_id)
    assert (done.status, done.exit_code, done.host) == (TaskStatus.COMPLETED, 0, "b")
    assert [(a.attempt, a.status, a.host) for a in store.attempts(task_id)] == [
        (1, TaskStatus.FAILED, "a"),
        (2, TaskStatus.COMPLETED, "b"),
    ]


def test_workers_are_listed_by_host(store: Store) -> None:
    _worker(store, "a")
    _worker(store, "b")
    assert [w.id for w in store.list_workers(host="a")] == ["a:cpu"]
    assert [w.id for w in store.list_workers()] == ["a:cpu", "b:cpu"]
    store.set_worker_state("b:cpu", WorkerState.DEAD, "stopped", "test")
    assert store.list_workers(host="b") == []
    assert [w.id for w in store.list_workers(include_dead=True, host="b")] == ["b:cpu"]


def test_managers_looking_at_once_declare_a_host_lost_exactly_once(store_target: str) -> None:
    """Several managers (one store each, as on separate hosts) check at the same
    instant: the host is declared lost once, its task ended and requeued once."""
    stores = [open_target(store_target) for _ in range(4)]
    try:
        first = stores[0]
        first.create_queue("q", [], "test")
        _register(first, "a")
        task_id = _submit(first, retries=3)
        assert first.claim_next_task(_worker(first, "a"), ["q"], []) is not None
        for i in range(1, 4):
            _register(first, f"m{i}", now=T0 + 100)
        found: list[list[str]] = [[] for _ in stores]
        start = threading.Barrier(3)

        def look(i: int) -> None:
            start.wait()
            found[i] = [lost.name for lost in stores[i].declare_lost_hosts(f"m{i}", now=T0 + 100)]

        threads = [threading.Thread(target=look, args=(i,)) for i in range(1, 4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(name for names in found for name in names) == ["a"]
        task = first.get_task(task_id)
        assert (task.status, task.attempt) == (TaskStatus.QUEUED, 1)
        moves = [(e.old, e.new) for e in first.events(kind="task", subject=task_id)]
        assert moves.count(("in_progress", "failed")) == 1 and moves.count(("failed", "queued")) == 1
    finally:
        for s in stores:
            s.close()
