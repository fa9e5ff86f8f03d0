"""What the parts of the PostgreSQL store share: its connections in place of
SQLite's, and the lock that orders queue positions.

The store's methods are the portable ones of the ``sqlite_*`` parts (one
transition function, one event record, the same row layer); this base gives
them a PostgreSQL connection (:mod:`fleet.store.postgres_connections`), and
the ``postgres_*`` parts override what the dialects do differently.
"""

from __future__ import annotations

import contextlib

from fleet.store.dbapi import DbConn
from fleet.store.postgres_connections import PgConn, PgConnections
from fleet.store.postgres_faults import StoreUrl
from fleet.store.sqlite_base import SQLiteBase

# pg_advisory_xact_lock key that orders queue positions (``seq``) across hosts
QUEUE_ORDER_LOCK = 0x666C656574_02  # "fleet" 2
# pg_try_advisory_xact_lock key of the manager that declares hosts lost (one at a time)
LOST_HOSTS_LOCK = 0x666C656574_03  # "fleet" 3


class PostgresBase(SQLiteBase):
    """The base of :class:`fleet.store.postgres.PostgresStore` and its parts."""

    url: StoreUrl
    _pg: PgConnections

    @property
    def conn(self) -> DbConn:
        """Reads outside a transaction: each statement borrows a pooled connection."""
        return self._pg.conn

    def _tx(self) -> contextlib.AbstractContextManager[DbConn]:
        return self._pg.tx()

    def _for_update(self, conn: DbConn) -> str:
        """In a write transaction the task or queue row read is locked until it
        ends, so a read-check-write of a task (enqueue, abort, finish, start) is
        never interleaved with another host's, and a queue is not deleted while
        a task is being put in it."""
        return " FOR UPDATE" if isinstance(conn, PgConn) else ""

    def _clock(self, conn: DbConn, now: float | None) -> float:
        """The server's clock (``now`` when given): leases are compared on one
        clock, whatever the hosts' clocks say."""
        if now is not None:
            return now
        return float(conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0])

    def _leader(self, conn: DbConn) -> bool:
        """One manager at a time declares hosts lost: the others, finding the
        lock held, pass for this round (the leader's transaction holds it)."""
        return bool(conn.execute("SELECT pg_try_advisory_xact_lock(?)", (LOST_HOSTS_LOCK,)).fetchone()[0])

    def _lock_queue_order(self, conn: DbConn) -> None:
        """Submits and requeues on many hosts take queue positions one at a time
        (``MAX(seq) + 1`` is read and written under this lock), so first in is
        first out across hosts as it is on one."""
        conn.execute("SELECT pg_advisory_xact_lock(?)", (QUEUE_ORDER_LOCK,))
