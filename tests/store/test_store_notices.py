"""Notices between hosts through the store (fleet.core.notices): on PostgreSQL an
announcement reaches every listening connection, whole, in order, split
under PostgreSQL's 8000-byte payload limit; on SQLite (one host) there is
nothing to announce to and nothing to listen to."""

from __future__ import annotations

import time

import pytest

from fleet.core.errors import StoreUnavailable
from fleet.core.notices import PAYLOAD_MAX, Notice, NoticeKind, decode, schedule_notice, wake_notices
from fleet.store.interface import Store, Subscription
from fleet.store.postgres_notices import APPLICATION
from tests.store.backends import is_pg, open_target, raw_execute


def _collect(subscription: Subscription, count: int, timeout: float = 10) -> list[Notice]:
    came: list[Notice] = []
    deadline = time.monotonic() + timeout
    while len(came) < count and time.monotonic() < deadline:
        came += subscription.wait(0.5)
    return came


def test_an_announcement_reaches_a_listener_on_another_connection(store: Store, store_target: str) -> None:
    wake = wake_notices("host0", "host1", ["host1:gpu0", "host1:dgpu"])
    if not is_pg(store_target):
        assert store.subscribe() is None
        store.announce([*wake, schedule_notice("host0")])  # nothing to tell: no error either
        return
    other = open_target(store_target)  # another host's manager, on the same database
    subscription = other.subscribe()
    assert subscription is not None
    try:
        assert subscription.wait(0.1) == []
        store.announce([*wake, schedule_notice("host0")])
        came = _collect(subscription, 2)
        assert came == [
            Notice(NoticeKind.WAKE, "host0", "host1", ("host1:gpu0", "host1:dgpu")),
            Notice(NoticeKind.SCHEDULE, "host0"),
        ]
    finally:
        subscription.close()
        other.close()


def test_many_ids_are_split_under_the_payload_limit_and_all_arrive(store: Store, store_target: str) -> None:
    ids = [f"host1:gpu{i}:{'x' * 40}" for i in range(600)]  # about 30 kB of ids
    notices = wake_notices("host0", "host1", ids)
    assert len(notices) > 1
    assert all(len(n.encode().encode()) <= PAYLOAD_MAX for n in notices)
    assert [w for n in notices for w in n.workers] == ids
    if not is_pg(store_target):
        return
    subscription = store.subscribe()  # the sender's own session hears it too
    assert subscription is not None
    try:
        store.announce(notices)  # one over 8000 bytes would be refused by the server
        came = _collect(subscription, len(notices))
        assert [w for n in came for w in n.workers] == ids
    finally:
        subscription.close()


def test_an_id_too_long_for_a_notice_wakes_the_whole_host() -> None:
    [notice] = wake_notices("host0", "host1", ["ok", "y" * 9000])
    assert notice.everyone and notice.host == "host1" and notice.workers == ()
    assert decode(notice.encode()) == notice


@pytest.mark.parametrize(
    "payload", ["", "{", '{"k":"boom","o":"h"}', '{"k":"wake","o":"h"}', '{"k":"wake","o":"h","h":"x","w":3}']
)
def test_a_payload_this_version_cannot_read_is_ignored(payload: str) -> None:
    assert decode(payload) is None


def test_a_listening_connection_the_server_ends_is_store_unavailable(pg_url: str) -> None:
    """PostgreSQL only: SQLite has no listening connection (``subscribe`` is None there)."""
    store = open_target(pg_url)
    store_target = pg_url
    subscription = store.subscribe()
    assert subscription is not None
    try:
        raw_execute(
            store_target,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ?",
            (APPLICATION,),
        )
        with pytest.raises(StoreUnavailable):
            _collect(subscription, 1)
    finally:
        subscription.close()
    again = store.subscribe()  # a new one works
    assert again is not None
    try:
        store.announce([schedule_notice("host0")])
        assert _collect(again, 1) == [schedule_notice("host0")]
    finally:
        again.close()
        store.close()
