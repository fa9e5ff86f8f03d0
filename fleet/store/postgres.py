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

import contextlib
import logging

import psycopg

from fleet.core.errors import StoreError
from fleet.store import postgres_schema
from fleet.store.interface import Store
from fleet.store.postgres_connections import PgConnections
from fleet.store.postgres_faults import StoreUrl
from fleet.store.postgres_history import PostgresHistory
from fleet.store.postgres_tasks import PostgresTasks
from fleet.store.sqlite import SQLiteQueues
from fleet.store.sqlite_gpus import SQLiteGpus
from fleet.store.sqlite_workers import SQLiteWorkers

log = logging.getLogger(__name__)

MIN_SERVER_VERSION = 130000  # PostgreSQL 13 (libpq's number: major * 10000 + minor)


class PostgresStore(PostgresTasks, PostgresHistory, SQLiteQueues, SQLiteWorkers, SQLiteGpus, Store):
    def __init__(self, url: str, *, pool_size: int | None = None) -> None:
        self.url = StoreUrl.parse(url)
        self._ignored: set[tuple[str, str, str]] = set()
        self._pg = PgConnections(self.url) if pool_size is None else PgConnections(self.url, size=pool_size)
        try:
            self._migrate()
        except BaseException:
            self._pg.close()
            raise

    def _migrate(self) -> None:
        with contextlib.closing(self._pg.connect()) as conn:
            version = conn.info.server_version
            if version < MIN_SERVER_VERSION:
                raise StoreError(
                    f"store {self.url.shown}: the server is PostgreSQL {version // 10000}.{version % 10000};"
                    f" fleet needs {MIN_SERVER_VERSION // 10000} or newer"
                )
            try:
                postgres_schema.migrate(conn, self.url.shown)
            except psycopg.Error as exc:
                self._pg.reraise(exc)

    def __repr__(self) -> str:
        return f"PostgresStore({self.url.shown!r})"

    @property
    def location(self) -> str:
        return self.url.shown

    def close(self) -> None:
        self._pg.close()
