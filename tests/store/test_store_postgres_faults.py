"""The PostgreSQL store's faults: a server that goes away and comes back, a
process frozen inside a transaction (and the rows it held), a process whose
connections are all in use, a server restart, a server or database that is
not there, and the URL's password kept out of every message and log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from fleet.core.errors import StoreError, StoreUnavailable
from fleet.core.models import TaskStatus
from fleet.store import (
    faults,
    postgres_connections,
)
from fleet.store.postgres import PostgresStore
from tests.pgserver import PgServer, server_or_skip
from tests.store.test_store import spec
from tests.threads import at_once

PASSWORD = "s3cr3t-Pa55word"


# -- a server that goes away ---------------------------------------------------------------


@pytest.fixture
def own_server() -> Iterator[PgServer]:
    """A server of this test's own, to stop and start."""
    with server_or_skip() as server:
        yield server


@pytest.mark.timeout(120)
def test_a_server_that_goes_away_is_store_unavailable_until_it_is_back(
    own_server: PgServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(faults, "QUIET_S", 0.0)  # the outage ends with the first write that lands
    url = own_server.url("postgres", password=PASSWORD)  # trust: any password is taken
    store = PostgresStore(url)
    caplog.set_level(logging.INFO)
    try:
        store.create_queue("q", [], "t")
        queued = store.create_task(spec(), "q", "t")
        own_server.stop("fast")  # every connection closed by the server
        calls: list[Callable[[], object]] = [
            lambda: store.get_task(queued.id),
            lambda: store.create_task(spec(), "q", "t"),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable, match="database server unreachable") as caught:
                call()
            assert PASSWORD not in str(caught.value)
            assert caught.value.__cause__ is None  # the driver's error (which may hold the URL) is not chained
        assert store._pg.outage.down
        own_server.start()
        deadline = time.monotonic() + 60
        while True:
            try:
                again = store.get_task(queued.id)
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the store never came back"
                time.sleep(0.2)
        assert again.status == TaskStatus.QUEUED
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len([w for w in warnings if "retrying with back-off" in w]) == 1  # the outage, told once
        assert not [r for r in caplog.records if r.name.startswith("psycopg")]  # not once per connection attempt
        assert PASSWORD not in caplog.text
        assert [t.id for t in store.list_tasks(queue="q")[0]] == [queued.id]  # the failed create left nothing
        store.create_task(spec(), "q", "t")
        assert len([r for r in caplog.records if "takes writes again after" in r.getMessage()]) == 1
        assert not store._pg.outage.down
    finally:
        store.close()


def test_a_lock_held_by_a_frozen_session_is_waited_for_boundedly_then_freed(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process frozen inside a transaction (SIGSTOP, a paused VM) holds its row
    locks: the others' writes fail ``database is locked`` after ``LOCK_WAIT_S``
    instead of hanging, and the server ends the frozen transaction after
    ``IDLE_IN_TX_S``, which frees the row."""
    monkeypatch.setattr(postgres_connections, "LOCK_WAIT_S", 0.3)
    monkeypatch.setattr(postgres_connections, "IDLE_IN_TX_S", 3.0)
    store = PostgresStore(pg_url)
    try:
        store.create_queue("q", [], "t")
        task = store.create_task(spec(), "q", "t")
        with psycopg.connect(pg_url, autocommit=True) as frozen:
            postgres_connections._configure(frozen)  # a session of fleet's
            frozen.execute("BEGIN")
            frozen.execute("SELECT * FROM tasks WHERE id = %s FOR UPDATE", (task.id,))
            with pytest.raises(StoreUnavailable, match="database is locked"):
                store.request_abort(task.id, "t", "x")
            deadline = time.monotonic() + 30
            while True:
                try:
                    stopped = store.request_abort(task.id, "t", "x")
                    break
                except StoreUnavailable:
                    assert time.monotonic() < deadline, "the frozen transaction was never ended"
                    time.sleep(0.2)
            assert stopped.status == TaskStatus.STOPPED
            with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
                frozen.execute("SELECT 1")  # the server ended it
    finally:
        store.close()


def _wait_gone(url: str, backend: int) -> None:
    """Until the server has ended the session of process ``backend``."""
    deadline = time.monotonic() + 30
    with psycopg.connect(url, autocommit=True) as watch:
        while watch.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (backend,)).fetchone() != (0,):
            assert time.monotonic() < deadline, "the server never ended the frozen transaction"
            time.sleep(0.05)


def test_a_process_frozen_in_its_transaction_finds_it_ended_and_changed_nothing(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frozen side: when it runs again, its transaction is gone (StoreUnavailable,
    nothing of it written) and its next call works on a fresh connection."""
    monkeypatch.setattr(postgres_connections, "IDLE_IN_TX_S", 0.5)
    store = PostgresStore(pg_url)
    try:
        store.create_queue("q", [], "t")
        task = store.create_task(spec(), "q", "t")
        with pytest.raises(StoreUnavailable, match="transaction ended by the server"), store._tx() as conn:
            conn.execute("UPDATE tasks SET status_reason = 'frozen' WHERE id = ?", (task.id,))
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            _wait_gone(pg_url, backend)  # frozen until the server has ended it
            conn.execute("SELECT 1")
        assert store.get_task(task.id).status_reason == ""
    finally:
        store.close()


def test_a_process_whose_connections_are_all_in_use_is_busy_not_unreachable(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_connections, "POOL_WAIT_S", 0.3)
    store = PostgresStore(pg_url, pool_size=1)
    try:
        store.create_queue("q", [], "t")
        failed: list[BaseException] = []

        def other_thread(_: int) -> None:
            try:
                store.list_queues()
            except StoreUnavailable as exc:
                failed.append(exc)

        with store._tx():  # this thread holds the only connection
            at_once(other_thread, 1)
        (busy,) = failed
        assert "database is busy" in str(busy) and "all 1 connections" in str(busy)
        assert [q.name for q in store.list_queues()] == ["q"]  # free again
    finally:
        store.close()


def test_after_a_server_restart_one_call_fails_not_one_per_pooled_connection(
    own_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_connections, "CHECK_IDLE_S", 600.0)  # every pooled connection is trusted
    store = PostgresStore(own_server.url(), pool_size=3)
    try:
        store.create_queue("q", [], "t")
        pg = store._pg
        with pg.borrow(), pg.borrow(), pg.borrow():  # three connections, all just used
            pass
        own_server.stop("fast")
        own_server.start()
        with pytest.raises(StoreUnavailable):
            store.list_queues()  # the first call meets a connection the restart closed
        for _ in range(3):
            assert [q.name for q in store.list_queues()] == ["q"]  # the others were checked, and replaced
    finally:
        store.close()


def test_a_server_that_cannot_be_reached_at_start_is_store_unavailable(own_server: PgServer) -> None:
    url = own_server.url("postgres", password=PASSWORD)
    own_server.stop("immediate")
    with pytest.raises(StoreUnavailable) as caught:
        PostgresStore(url)
    assert PASSWORD not in str(caught.value)


def test_a_database_that_does_not_exist_is_a_store_error_not_a_wait(pg_server: PgServer) -> None:
    with pytest.raises(StoreError, match="refused the connection") as caught:
        PostgresStore(pg_server.url("no_such_db", password=PASSWORD))
    assert not isinstance(caught.value, StoreUnavailable)
    assert PASSWORD not in str(caught.value)


def test_the_password_never_shows(pg_server: PgServer, caplog: pytest.LogCaptureFixture) -> None:
    name = pg_server.create_database()
    url = pg_server.url(name, password=PASSWORD) + f"?sslmode=disable&sslpassword={PASSWORD}x"
    try:
        with caplog.at_level(logging.DEBUG):
            store = PostgresStore(url)
            store.create_queue("q", [], "t")
            shown = f"{store!r} {store.url} {store.location} {store._pg.outage.path}"
            store.close()
        assert PASSWORD not in shown and PASSWORD not in caplog.text
        assert f"postgres:********@127.0.0.1:{pg_server.port}/{name}" in shown
        assert "sslpassword=********" in shown
    finally:
        pg_server.drop_database(name)
