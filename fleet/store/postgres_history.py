"""The PostgreSQL store's history reads where the dialects differ.

The dispatch latencies are read after a ``rowid`` cursor.  SQLite's one
writer commits rowids in order; on PostgreSQL two claims on two hosts can
commit out of their ``rowid`` order, and a reader that ran between them
would pass the earlier one for good.  So a reader stops before the first
attempt recorded (server time, ``recorded_at``) less than :data:`SETTLE_S`
ago: no transaction of fleet's lives that long (a lock is waited for
:data:`~fleet.store.postgres_connections.LOCK_WAIT_S` at most, a transaction
left open is ended after
:data:`~fleet.store.postgres_connections.IDLE_IN_TX_S`), so nothing can
still be committed before that point.  ``/metrics``' dispatch histogram
lags by that much on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from fleet.store.postgres_base import PostgresBase
from fleet.store.postgres_connections import IDLE_IN_TX_S, LOCK_WAIT_S
from fleet.store.sqlite_history import _MARKS, SQLiteHistory

SETTLE_S = LOCK_WAIT_S + IDLE_IN_TX_S + 20.0


class PostgresHistory(SQLiteHistory, PostgresBase):
    """Mixed into :class:`fleet.store.postgres.PostgresStore`."""

    # each worker's last state change before a time: DISTINCT ON (no bare columns beside MAX)
    _LAST_CHANGES = (
        f"SELECT DISTINCT ON (subject) subject, at, new FROM events WHERE kind = 'worker'"
        f" AND new IN ({_MARKS}) AND at < ? ORDER BY subject, at DESC, id DESC"
    )

    def _settled(self, after: int) -> tuple[str, tuple[Any, ...]]:
        horizon = (
            " AND a.rowid < coalesce((SELECT min(u.rowid) FROM task_attempts u WHERE u.rowid > ?"
            " AND u.recorded_at >= extract(epoch FROM clock_timestamp()) - ?), 9223372036854775807)"
        )
        return horizon, (after, SETTLE_S)
