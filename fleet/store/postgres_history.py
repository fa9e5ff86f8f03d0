"""The PostgreSQL store's history reads where the dialects differ."""

from __future__ import annotations

from fleet.store.postgres_base import PostgresBase
from fleet.store.sqlite_history import _MARKS, SQLiteHistory


class PostgresHistory(SQLiteHistory, PostgresBase):
    """Mixed into :class:`fleet.store.postgres.PostgresStore`."""

    # each worker's last state change before a time: DISTINCT ON (no bare columns beside MAX)
    _LAST_CHANGES = (
        f"SELECT DISTINCT ON (subject) subject, at, new FROM events WHERE kind = 'worker'"
        f" AND new IN ({_MARKS}) AND at < ? ORDER BY subject, at DESC, id DESC"
    )
