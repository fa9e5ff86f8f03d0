"""The little of a database connection the store's SQL needs, as types.

The store's portable SQL (``sqlite_*.py``: plain SQL with ``?`` placeholders)
runs on two connections: :class:`sqlite3.Connection` and the PostgreSQL
store's :class:`fleet.store.postgres_connections.PgConn`, which maps the
placeholders and returns rows that read like :class:`sqlite3.Row` (by
position, by column name, and ``dict(row)``).  The methods are typed against
these protocols, not against either driver.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol


class DbRows(Protocol):
    """What a statement returns: its rows (read once) and how many rows it changed."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...

    def close(self) -> None: ...


class DbConn(Protocol):
    """A connection (inside a write transaction, or reading on its own)."""

    def execute(self, sql: str, parameters: Any = (), /) -> DbRows: ...

    def executemany(self, sql: str, parameters: Any, /) -> DbRows: ...
