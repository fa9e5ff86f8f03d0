"""Connections to the PostgreSQL store: a pool per process, and a connection
that reads like :class:`sqlite3.Connection` for the store's portable SQL.

Each process keeps a small :class:`psycopg_pool.ConnectionPool` (autocommit
connections; one idle for a while is checked before use, so one that the
server dropped is replaced instead of failing a call).  A read outside a transaction borrows a
connection for one statement; :meth:`PgConnections.tx` holds one for a
transaction.  :class:`PgConn` maps the ``?`` placeholders of the portable
SQL to psycopg's ``%s`` and returns every row at once as :class:`Row`
(by position, by name, ``dict(row)``), so the statement's connection is back
in the pool before its rows are read.

Every driver error goes through :func:`fleet.store.postgres_faults.unavailable`:
a passing state becomes :class:`~fleet.errors.StoreUnavailable` (told to the
process's :class:`~fleet.store.faults.Outage`), anything else stays what it is.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from fleet.core.errors import StoreError, StoreUnavailable
from fleet.store import postgres_schema
from fleet.store.faults import Outage
from fleet.store.postgres_faults import BUSY, ENDED, UNREACHABLE, StoreUrl, refusal, unavailable

# The pool logs each failed connection attempt; an outage is told once, with its cause and its
# end, by the store's Outage (fleet.store.faults), as with SQLite.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

MIN_SERVER_VERSION = 130000  # PostgreSQL 13 (libpq's number: major * 10000 + minor)
POOL_SIZE = 8  # connections a process keeps at most (the manager's API threads share them)
# A session of fleet's waits at most LOCK_WAIT_S for a lock (then: StoreUnavailable, "database is
# locked", and the caller backs off), and a transaction left open IDLE_IN_TX_S (a frozen process,
# a VM paused mid-transaction) is ended by the server, releasing its locks for the other hosts.
LOCK_WAIT_S = 10.0
IDLE_IN_TX_S = 30.0
POOL_WAIT_S = 5.0  # how long a call waits for a free connection before the store is unavailable
CONNECT_TIMEOUT_S = 5  # libpq's connect_timeout
# A pooled connection idle longer than this is checked (one round trip) before it is handed out;
# one used more recently is trusted (if the server went away since, that one call answers
# StoreUnavailable, and every pooled connection is checked before its next use).  Checking every
# time doubled a read's cost.
CHECK_IDLE_S = 2.0


class Row(tuple[Any, ...]):
    """A result row: by position, by column name, and ``dict(row)`` (like :class:`sqlite3.Row`)."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


class Rows:
    """A statement's rows, already fetched, and its row count."""

    def __init__(self, rows: list[Row], rowcount: int) -> None:
        self._rows = rows
        self._rowcount = rowcount

    @property
    def rowcount(self) -> int:
        return self._rowcount

    def fetchone(self) -> Row | None:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[Row]:
        rows, self._rows = self._rows, []
        return rows

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())

    def close(self) -> None:
        self._rows = []


@functools.lru_cache(maxsize=512)
def pg_sql(sql: str) -> str:
    """Portable SQL (``?`` placeholders) as psycopg takes it (``%s``, a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _configure(raw: psycopg.Connection[Any]) -> None:
    """Each new pooled connection's session settings (see :data:`LOCK_WAIT_S`)."""
    raw.execute(f"SET lock_timeout = {int(LOCK_WAIT_S * 1000)}")
    raw.execute(f"SET idle_in_transaction_session_timeout = {int(IDLE_IN_TX_S * 1000)}")


def _rows(cur: psycopg.Cursor[Any]) -> Rows:
    if cur.description is None:
        return Rows([], cur.rowcount)
    index = {column.name: i for i, column in enumerate(cur.description)}
    return Rows([Row(values, index) for values in cur.fetchall()], cur.rowcount)


class PgConn:
    """One psycopg connection seen as the store's :class:`~fleet.store.dbapi.DbConn`."""

    def __init__(self, raw: psycopg.Connection[Any], owner: PgConnections) -> None:
        self.raw = raw
        self._owner = owner

    def execute(self, sql: str, parameters: Any = (), /) -> Rows:
        try:
            with self.raw.cursor() as cur:
                cur.execute(pg_sql(sql), tuple(parameters))
                return _rows(cur)
        except psycopg.Error as exc:
            self._owner.reraise(exc)

    def executemany(self, sql: str, parameters: Any, /) -> Rows:
        try:
            with self.raw.cursor() as cur:
                cur.executemany(pg_sql(sql), [tuple(p) for p in parameters])
                return Rows([], cur.rowcount)
        except psycopg.Error as exc:
            self._owner.reraise(exc)


class _Borrowing:
    """Reads outside a transaction: each statement on a connection borrowed from the pool."""

    def __init__(self, owner: PgConnections) -> None:
        self._owner = owner

    def execute(self, sql: str, parameters: Any = (), /) -> Rows:
        with self._owner.borrow() as raw:
            return PgConn(raw, self._owner).execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Rows:
        with self._owner.borrow() as raw:
            return PgConn(raw, self._owner).executemany(sql, parameters)


class PgConnections:
    """This process's connections to one PostgreSQL database."""

    def __init__(self, url: StoreUrl, name: str = "store", size: int = POOL_SIZE) -> None:
        self.url = url
        self._size = size
        self.outage = Outage(url.shown, name)
        self._used: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = weakref.WeakKeyDictionary()
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url.conninfo,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            min_size=1,
            max_size=size,
            timeout=POOL_WAIT_S,
            check=self._check,
            configure=_configure,
            name=f"fleet-{name}",
            open=False,
        )
        self._pool.open(wait=False)
        self.conn = _Borrowing(self)

    def _check(self, raw: psycopg.Connection[Any]) -> None:
        if time.monotonic() - self._used.get(raw, 0.0) > CHECK_IDLE_S:
            ConnectionPool.check_connection(raw)

    def connect(self) -> psycopg.Connection[Any]:
        """A connection of its own (the migration's), not from the pool."""
        try:
            return psycopg.connect(self.url.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.Error as exc:
            self.reraise(exc)

    def reraise(self, exc: psycopg.Error) -> NoReturn:
        """Raise what a driver error means to fleet: StoreUnavailable, a refusal
        (StoreError), or the error itself (a bug).  The driver's text is scrubbed
        of the URL's secrets, and the driver's error is not chained (its
        attributes may hold the connection string)."""
        fault = unavailable(exc, self.url)
        if fault is not None:
            if fault.cause in (UNREACHABLE, ENDED):  # the other pooled connections may be gone too:
                self._used.clear()  # check each before it is handed out again
            self.outage.failed(fault)
            raise fault from None
        refused = refusal(exc, self.url)
        if refused is not None:
            raise refused from None
        raise exc

    @contextlib.contextmanager
    def borrow(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as raw:
                try:
                    yield raw
                finally:
                    self._used[raw] = time.monotonic()
        except PoolTimeout as exc:
            stats = self._pool.get_stats()
            if stats.get("pool_size", 0) >= self._size and not stats.get("pool_available", 0):
                # every connection of the pool is in use: the callers are many, not the server gone
                fault = StoreUnavailable(BUSY, f"all {self._size} connections of this process in use")
                self.outage.failed(fault)
                raise fault from None
            self.reraise(exc)
        except psycopg.Error as exc:
            self.reraise(exc)

    @contextlib.contextmanager
    def tx(self) -> Iterator[PgConn]:
        """A write transaction on one connection: committed at the end, rolled back on any error."""
        with self.borrow() as raw:
            try:
                with raw.transaction():
                    yield PgConn(raw, self)
            except psycopg.Error as exc:  # the commit itself, or a bug in the body
                self.reraise(exc)
        self.outage.wrote()

    def close(self) -> None:
        self._pool.close()


def open_database(url: StoreUrl, name: str = "store", size: int = POOL_SIZE) -> PgConnections:
    """The process's connections to the database at ``url``, once the server is
    new enough and the schema migrated to this version (refused when newer)."""
    pg = PgConnections(url, name, size)
    try:
        with contextlib.closing(pg.connect()) as conn:
            version = conn.info.server_version
            if version < MIN_SERVER_VERSION:
                raise StoreError(
                    f"store {url.shown}: the server is PostgreSQL {version // 10000}.{version % 10000};"
                    f" fleet needs {MIN_SERVER_VERSION // 10000} or newer"
                )
            try:
                postgres_schema.migrate(conn, url.shown)
            except psycopg.Error as exc:
                pg.reraise(exc)
    except BaseException:
        pg.close()
        raise
    return pg
