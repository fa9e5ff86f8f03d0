"""The SQLite store's history: the event record, and the bulk reads by time
range that the usage report and the Prometheus collector need."""

from __future__ import annotations

from typing import Any

from fleet.models import Event
from fleet.store.sqlite_base import SQLiteBase


class SQLiteHistory(SQLiteBase):
    """Mixed into :class:`fleet.store.sqlite.SQLiteStore`."""

    # -- events -----------------------------------------------------------------
    def events(self, kind: str | None = None, subject: str | None = None, limit: int = 200) -> list[Event]:
        where: list[str] = []
        params: list[Any] = []
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if subject is not None:
            where.append("subject = ?")
            params.append(subject)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self.conn.execute(f"SELECT * FROM events{clause} ORDER BY id DESC LIMIT ?", (*params, limit))
        return [
            Event(
                id=r["id"],
                at=r["at"],
                kind=r["kind"],
                subject=r["subject"],
                old=r["old"],
                new=r["new"],
                actor=r["actor"],
                reason=r["reason"] or "",
            )
            for r in rows
        ][::-1]
