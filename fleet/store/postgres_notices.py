"""Notices between the hosts of a fleet on PostgreSQL: ``NOTIFY`` and ``LISTEN``.

:meth:`PostgresNotices.announce` sends each notice (:mod:`fleet.core.notices`)
with ``pg_notify`` on :data:`~fleet.core.notices.CHANNEL`, all of them in one
statement on a pooled connection in autocommit, so they go out at once (a
``NOTIFY`` inside a transaction would wait for its commit; the service calls
this after its commit).  The server hands each one to every session that
listens, the sender's own included, in the order they were sent.

:meth:`PostgresNotices.subscribe` opens a connection of its own (not the
pool's: a listening session must stay open and idle) and ``LISTEN``\\ s on it.
TCP keepalives make a server that vanished without closing the connection (a
partition, a host that froze) an error within about half a minute, not a
silent wait; a server that stops or restarts closes it at once.  Either way
:meth:`PgSubscription.wait` raises :class:`~fleet.errors.StoreUnavailable`
(the URL's secrets scrubbed, as every error of the store) and the caller
subscribes again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from fleet.core.notices import CHANNEL, Notice, decode
from fleet.store.interface import Subscription
from fleet.store.postgres_base import PostgresBase
from fleet.store.postgres_connections import CONNECT_TIMEOUT_S, PgConnections

# a connection whose server stopped answering is declared broken after about
# KEEPALIVE_IDLE_S + KEEPALIVE_COUNT * KEEPALIVE_INTERVAL_S seconds of silence
KEEPALIVE_IDLE_S = 10
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3
APPLICATION = "fleet-notices"  # the listening session's name in pg_stat_activity


class PostgresNotices(PostgresBase):
    """The notices of :class:`fleet.store.postgres.PostgresStore`."""

    def announce(self, notices: Sequence[Notice]) -> None:
        if not notices:
            return
        self.conn.execute(
            "SELECT pg_notify(?, payload) FROM unnest(CAST(? AS text[])) AS payload",  # in the list's order
            (CHANNEL, [notice.encode() for notice in notices]),
        )

    def subscribe(self) -> Subscription | None:
        return PgSubscription(self._pg)


class PgSubscription(Subscription):
    """One listening session."""

    def __init__(self, pg: PgConnections) -> None:
        self._pg = pg
        try:
            self._raw: psycopg.Connection[Any] = psycopg.connect(
                pg.url.conninfo,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name=APPLICATION,
                keepalives=1,
                keepalives_idle=KEEPALIVE_IDLE_S,
                keepalives_interval=KEEPALIVE_INTERVAL_S,
                keepalives_count=KEEPALIVE_COUNT,
            )
        except psycopg.Error as exc:
            pg.reraise(exc)
        try:
            self._raw.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            self._raw.close()
            pg.reraise(exc)

    def wait(self, timeout: float) -> list[Notice]:
        try:
            came = list(self._raw.notifies(timeout=timeout, stop_after=1))
            if came:
                came += self._raw.notifies(timeout=0)  # whatever else is already here
        except psycopg.Error as exc:
            self._pg.reraise(exc)
        notices = (decode(n.payload) for n in came if n.channel == CHANNEL)
        return [notice for notice in notices if notice is not None]

    def close(self) -> None:
        self._raw.close()
