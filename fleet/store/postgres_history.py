"""The PostgreSQL store's history reads where the dialects differ.

Known gap (next): :meth:`dispatch_latencies` reads attempts after a
``rowid`` cursor.  SQLite's one writer commits rowids in order; on
PostgreSQL two claims committing out of their ``rowid`` order can make a
reader that ran between them skip the earlier one's latency (a sample
missing from ``/metrics``' histogram, nothing else).
"""

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
