"""The SQLite store's history: the event record, and the bulk reads by time
range that the usage report and the Prometheus collector need."""

from __future__ import annotations

import json
from typing import Any

from fleet.core.models import Event, WorkerState
from fleet.metrics.report import Attempt, StateChange, WorkerInfo
from fleet.store.rows import from_columns
from fleet.store.sqlite_base import SQLiteBase

_STATES = tuple(s.value for s in WorkerState)
_MARKS = ",".join("?" * len(_STATES))
# the time an attempt was queued: the task's last move to "queued" before the attempt's claim
_QUEUED_AT = (
    "(SELECT MAX(e.at) FROM events e WHERE e.kind = 'task' AND e.subject = a.task_id"
    " AND e.new = 'queued' AND e.at <= a.started_at)"
)


def _gpus(text: str | None) -> tuple[int, ...]:
    value = json.loads(text) if text else None
    return tuple(int(g) for g in value) if isinstance(value, list) else ()


class SQLiteHistory(SQLiteBase):
    """Mixed into :class:`fleet.store.sqlite.SQLiteStore`."""

    # each worker's last state change before a time (SQLite: the row of MAX(at) in its group)
    _LAST_CHANGES = (
        f"SELECT subject, MAX(at) AS at, new FROM events WHERE kind = 'worker' AND new IN ({_MARKS})"
        " AND at < ? GROUP BY subject"
    )

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
        return [from_columns(Event, r, reason=r["reason"] or "") for r in rows][::-1]

    # -- the report's and the collector's reads ------------------------------------
    def worker_units(self) -> list[WorkerInfo]:
        return [
            WorkerInfo(r["id"], r["host"], _gpus(r["gpus"]), r["mode"])
            for r in self.conn.execute("SELECT id, host, gpus, mode FROM workers")
        ]

    def worker_state_changes(self, since: float, until: float) -> list[StateChange]:
        conn = self.conn
        changes = [
            StateChange(r["subject"], r["at"], r["new"]) for r in conn.execute(self._LAST_CHANGES, (*_STATES, since))
        ]
        changes += [
            StateChange(r["subject"], r["at"], r["new"])
            for r in conn.execute(
                f"SELECT subject, at, new FROM events WHERE kind = 'worker' AND new IN ({_MARKS})"
                " AND at >= ? AND at < ? ORDER BY id",
                (*_STATES, since, until),
            )
        ]
        return changes

    def attempts_between(self, since: float, until: float) -> list[Attempt]:
        return [
            Attempt(
                task=r["task_id"],
                attempt=r["attempt"],
                worker=r["worker"] or "",
                host=r["host"] or "",
                gpus=_gpus(r["gpus"]),
                queue=r["queue"],
                user=r["user"] or "",
                status=r["status"] or "",
                started_at=r["started_at"],
                finished_at=r["finished_at"],
                queued_at=r["queued_at"],
                owner=r["owner"],
            )
            for r in self.conn.execute(
                f'SELECT a.*, t.queue, t."user", {_QUEUED_AT} AS queued_at FROM task_attempts a'
                " JOIN tasks t ON t.id = a.task_id"
                " WHERE a.started_at < ? AND (a.finished_at IS NULL OR a.finished_at >= ?)",
                (until, since),
            )
        ]

    def ended_counts(self) -> dict[str, int]:
        return {
            r[0]: int(r[1])
            for r in self.conn.execute(
                "SELECT status, COUNT(*) FROM task_attempts WHERE finished_at IS NOT NULL GROUP BY status"
            )
        }

    def dispatch_latencies(self, after: int) -> tuple[int, list[float]]:
        last = after
        out: list[float] = []
        settled, params = self._settled(after)
        for r in self.conn.execute(
            f"SELECT a.rowid AS rid, a.started_at, {_QUEUED_AT} AS queued_at FROM task_attempts a"
            f" WHERE a.rowid > ?{settled} ORDER BY a.rowid",
            (after, *params),
        ):
            last = int(r["rid"])
            if r["queued_at"] is not None:
                out.append(max(float(r["started_at"]) - float(r["queued_at"]), 0.0))
        return last, out

    def _settled(self, after: int) -> tuple[str, tuple[Any, ...]]:
        """A condition on attempt ``a`` past the cursor: no attempt still to be
        committed can come before it.  None in SQLite, whose one writer commits
        rowids in order."""
        return "", ()

    def queue_waiting_since(self) -> dict[str, float]:
        rows = self.conn.execute("SELECT queue, MIN(queued_at) FROM tasks WHERE status = 'queued' GROUP BY queue")
        return {r[0]: float(r[1]) for r in rows if r[0] is not None and r[1] is not None}
