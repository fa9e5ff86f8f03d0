"""The manager's listener (fleet.manager.notices) on a real PostgreSQL store:
it wakes only its own host's workers, recomputes on a schedule notice, skips
its own notices, and comes back by itself when the server ends its session,
catching up on what it may have missed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleet.core.home import Home
from fleet.core.notices import Notice, NoticeKind, schedule_notice, wake_notices
from fleet.core.wakeups import Listener
from fleet.manager.notices import NoticeListener
from fleet.store import open_store
from fleet.store.interface import Store
from fleet.store.postgres_notices import APPLICATION
from tests.factories import live_worker
from tests.store.backends import raw_execute

HOST = "h"  # live_worker's host


def _until(predicate: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.count += 1


@pytest.fixture
def sender(pg_url: str, tmp_path: Path) -> Iterator[Store]:
    """Another host's manager: the same database, its own home."""
    store = open_store(Home(tmp_path / "other"), pg_url)
    yield store
    store.close()


def test_the_listener_wakes_its_own_workers_and_recovers_from_a_lost_connection(
    pg_url: str, tmp_path: Path, sender: Store
) -> None:
    home = Home(tmp_path / "home").ensure()
    store = open_store(home, pg_url)
    store.create_queue("q", [], "test")
    store.register_worker(live_worker("h:gpu0", [0], ["q"]), "test")
    ears = {wid: Listener(home.root, wid) for wid in ("h:gpu0", "h:gpu1:per-task")}
    recomputed = Counter()
    listener = NoticeListener(store, home.root, HOST, recomputed)
    listener.start()
    try:
        _until(listener.listening.is_set, "listening")

        def woken() -> set[str]:
            return {wid for wid, ear in ears.items() if ear.drain()}

        sender.announce(wake_notices("other", "elsewhere", ["h:gpu0"]))  # another host's worker of that name
        sender.announce(wake_notices(HOST, HOST, ["h:gpu0"]))  # this manager's own: done already
        sender.announce(wake_notices("other", HOST, ["h:gpu1:per-task"]))
        _until(lambda: bool(ears["h:gpu1:per-task"].drain()), "the per-task worker woken")
        assert woken() == set()

        sender.announce([Notice(NoticeKind.WAKE, "other", HOST, everyone=True)])  # every worker of this host
        _until(lambda: bool(ears["h:gpu0"].drain()), "every worker of the host woken")

        sender.announce([schedule_notice("other"), schedule_notice(HOST)])
        sender.announce(wake_notices("other", HOST, ["h:gpu1:per-task"]))  # after both, in order
        _until(lambda: bool(ears["h:gpu1:per-task"].drain()), "the notice after the schedule ones")
        assert recomputed.count == 1  # its own was skipped

        # the server ends the listening session: it listens again and catches up
        raw_execute(
            pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ?", (APPLICATION,)
        )
        _until(lambda: recomputed.count == 2, "caught up after the lost connection")
        _until(lambda: bool(ears["h:gpu0"].drain()), "its workers woken on the catch-up")
        _until(listener.listening.is_set, "listening again")
        sender.announce(wake_notices("other", HOST, ["h:gpu0"]))
        _until(lambda: bool(ears["h:gpu0"].drain()), "woken through the new connection")
    finally:
        listener.stop()
        for ear in ears.values():
            ear.close()
        store.close()
    assert listener._thread is not None and not listener._thread.is_alive()


def test_on_sqlite_the_listener_ends_at_once(tmp_path: Path) -> None:
    home = Home(tmp_path / "home").ensure()
    store = open_store(home)
    listener = NoticeListener(store, home.root, HOST, lambda: None)
    listener.start()
    assert listener._thread is not None
    listener._thread.join(timeout=10)
    assert not listener._thread.is_alive()
    store.close()
