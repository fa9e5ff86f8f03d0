"""The service's wake-ups on a PostgreSQL store shared by two hosts: a datagram
to every worker meant, and one notice per *other* host, naming exactly its
workers (a real server; a second connection listens as the other host's
manager does)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.core.home import Home
from fleet.core.models import TaskStatus, WorkerMode, WorkerState
from fleet.core.notices import Notice, NoticeKind
from fleet.core.wakeups import Listener
from fleet.policy.allocate import PoolState
from fleet.service.wake import Wake
from fleet.store import open_store
from fleet.store.interface import Store, Subscription
from tests.factories import live_worker
from tests.store.test_store import spec


@pytest.fixture
def two_hosts(pg_url: str, tmp_path: Path) -> Iterator[tuple[Home, Store, Subscription]]:
    home = Home(tmp_path / "home").ensure()
    store = open_store(home, pg_url)
    store.create_queue("q", [], "test")
    store.register_worker(live_worker("h:gpu0", [0], ["q"]), "test")
    store.register_worker(dataclasses.replace(live_worker("h2:gpu0", [0], ["q"]), host="h2"), "test")
    store.register_worker(dataclasses.replace(live_worker("h2:gpu1", [1], ["other"]), host="h2"), "test")
    subscription = store.subscribe()
    assert subscription is not None
    yield home, store, subscription
    subscription.close()
    store.close()


def _heard(subscription: Subscription) -> list[Notice]:
    """What came within a moment (the sender's notices are sent before it returns)."""
    came: list[Notice] = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        came += subscription.wait(0.2)
    return came


def test_a_queue_wakes_its_workers_here_by_datagram_and_announces_the_other_hosts(
    two_hosts: tuple[Home, Store, Subscription],
) -> None:
    home, store, subscription = two_hosts
    ear = Listener(home.root, "h:gpu0")
    try:
        Wake(home.root, store, "h").queue("q")
        assert ear.drain() == 1
        assert _heard(subscription) == [Notice(NoticeKind.WAKE, "h", "h2", ("h2:gpu0",))]  # not h, not gpu1
    finally:
        ear.close()


def test_an_abort_wakes_the_worker_of_the_task_on_its_host_and_a_force_every_manager(
    two_hosts: tuple[Home, Store, Subscription],
) -> None:
    home, store, subscription = two_hosts
    task = store.create_task(spec(), "q", "test")
    claimed = store.claim_next_task(store.get_worker("h2:gpu0"), ["q"], [0])
    assert claimed is not None and claimed.id == task.id and claimed.host == "h2"
    aborted = store.request_abort(task.id, "test", "aborted")
    assert aborted.status == TaskStatus.IN_PROGRESS
    wake = Wake(home.root, store, "h")
    recomputed: list[bool] = []
    wake.recompute = lambda: recomputed.append(True)
    wake.tasks([aborted])
    wake.schedule()
    assert _heard(subscription) == [
        Notice(NoticeKind.WAKE, "h", "h2", ("h2:gpu0",)),
        Notice(NoticeKind.SCHEDULE, "h"),
    ]
    assert recomputed == [True]
    wake.tasks([store.create_task(spec(), "q", "test")])  # runs nowhere: no one to wake
    wake.workers(["h:gpu0"])  # this host's only: nothing announced
    assert _heard(subscription) == []


def test_a_queue_announces_only_the_other_hosts_workers_that_may_start_a_task_now(
    two_hosts: tuple[Home, Store, Subscription],
) -> None:
    """A busy worker or a full pool of another host is not woken for a new task
    (it pulls again when its own task ends); a pool with a free GPU is."""
    home, store, subscription = two_hosts
    full = dataclasses.replace(live_worker("h2:dgpu", [2, 3], ["q"]), host="h2", mode=WorkerMode.DYNAMIC)
    store.register_worker(full, "test")
    store.update_worker("h2:dgpu", pool=PoolState(gpus=(2, 3), free=()))
    store.create_task(spec(), "q", "t")
    assert store.claim_next_task(store.get_worker("h2:gpu0"), ["q"], [0], busy="running {task}") is not None
    assert store.get_worker("h2:gpu0").state == WorkerState.BUSY
    wake = Wake(home.root, store, "h")
    wake.queue("q")
    assert _heard(subscription) == []  # h2:gpu0 busy, h2:dgpu full (h's own worker got its datagram)
    store.update_worker("h2:dgpu", pool=PoolState(gpus=(2, 3), free=(3,)))
    wake.queue("q")
    assert _heard(subscription) == [Notice(NoticeKind.WAKE, "h", "h2", ("h2:dgpu",))]
