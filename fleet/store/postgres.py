"""The PostgreSQL store: one database shared by the managers and workers of
many hosts (``fleet.store.url`` / ``FLEET_STORE_URL``).

The same :class:`~fleet.store.interface.Store` as SQLite's, on psycopg 3 and a
connection pool per process (:mod:`fleet.store.postgres_connections`); it
shares the portable methods of the ``sqlite_*`` parts (every state change
through the one transition function, with its event in the same
transaction) and overrides the claims (``FOR UPDATE SKIP LOCKED``:
:mod:`fleet.store.postgres_tasks`), the schema
(:mod:`fleet.store.postgres_schema`) and a history read.  PostgreSQL 13 or
newer.  The URL's password never leaves this package unmasked
(:mod:`fleet.store.postgres_faults`).
"""

from __future__ import annotations

from fleet.store.interface import Store
from fleet.store.postgres_connections import POOL_SIZE, open_database
from fleet.store.postgres_faults import StoreUrl
from fleet.store.postgres_history import PostgresHistory
from fleet.store.postgres_tasks import PostgresTasks
from fleet.store.sqlite import SQLiteQueues
from fleet.store.sqlite_gpus import SQLiteGpus
from fleet.store.sqlite_hosts import SQLiteHosts
from fleet.store.sqlite_workers import SQLiteWorkers


class PostgresStore(PostgresTasks, PostgresHistory, SQLiteQueues, SQLiteWorkers, SQLiteGpus, SQLiteHosts, Store):
    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        self.url = StoreUrl.parse(url)
        self._ignored: set[tuple[str, str, str]] = set()
        self._pg = open_database(self.url, "store", pool_size)

    def __repr__(self) -> str:
        return f"PostgresStore({self.url.shown!r})"

    @property
    def location(self) -> str:
        return self.url.shown

    def close(self) -> None:
        self._pg.close()
