"""The metrics samples on the PostgreSQL store: every host's sampler writes its
host's rows (``host`` / ``worker`` / ``task`` columns say whose) into the one
database, so the page and ``/metrics`` of any host can read every host's.

The same methods as :class:`~fleet.store.sqlite_samples.SQLiteSamples` (raw
rows, one-minute roll-ups under a watermark, retention, series, each
attempt's figures), on a connection pool of its own; PostgreSQL spells the
two-value maximum ``GREATEST`` and its time buckets ``floor``.  A roll-up is
one transaction, so two hosts' managers maintaining at once roll each minute
up once: each takes an advisory lock first, so the second finds the minutes
done.
"""

from __future__ import annotations

from fleet.store.dbapi import DbConn
from fleet.store.postgres_connections import open_database
from fleet.store.postgres_faults import StoreUrl
from fleet.store.sqlite_samples import SQLiteSamples

POOL_SIZE = 2  # the sampler and the API's readers of one process
MAINTENANCE_LOCK = 0x666C656574_03  # pg_advisory_xact_lock key of the roll-ups ("fleet" 3)


class PostgresSamples(SQLiteSamples):
    _GREATEST = "GREATEST"
    _BUCKET = "floor(at / ?)::bigint"

    def __init__(self, url: str) -> None:  # (SQLiteSamples.__init__ would open a file: not called)
        self.url = StoreUrl.parse(url)
        self.db = open_database(self.url, "metrics", POOL_SIZE)

    def _lock_maintenance(self, conn: DbConn) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(?)", (MAINTENANCE_LOCK,))

    def __repr__(self) -> str:
        return f"PostgresSamples({self.url.shown!r})"
