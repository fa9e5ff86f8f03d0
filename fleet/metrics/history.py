"""The accounting record, read for the report and for Prometheus.

Reads the store's own tables (``workers``, ``events``, ``task_attempts``,
``tasks``) read-only, in bulk and by time range, which the :class:`Store`
interface has no calls for yet.  The SQL is plain and portable; when the
PostgreSQL store arrives, these reads move behind that interface unchanged.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fleet.metrics._db import Database
from fleet.metrics.report import Attempt, History, StateChange, UtilPoint, WorkerInfo
from fleet.metrics.samples import KINDS
from fleet.metrics.storage import ROLLUP_S, MetricsStorage
from fleet.models import WorkerState

log = logging.getLogger(__name__)

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


class HistoryReader:
    def __init__(self, storage: MetricsStorage) -> None:
        self.storage = storage
        self.db: Database = storage.db

    def load(self, since: float, until: float) -> History:
        """Everything the report needs for ``[since, until)``."""
        conn = self.db.conn
        workers = [
            WorkerInfo(r["id"], r["host"], _gpus(r["gpus"])) for r in conn.execute("SELECT id, host, gpus FROM workers")
        ]
        changes = [
            StateChange(r["subject"], r["at"], r["new"])
            for r in conn.execute(
                f"SELECT subject, MAX(at) AS at, new FROM events WHERE kind = 'worker' AND new IN ({_MARKS})"
                " AND at < ? GROUP BY subject",
                (*_STATES, since),
            )
        ]
        changes += [
            StateChange(r["subject"], r["at"], r["new"])
            for r in conn.execute(
                f"SELECT subject, at, new FROM events WHERE kind = 'worker' AND new IN ({_MARKS})"
                " AND at >= ? AND at < ? ORDER BY id",
                (*_STATES, since, until),
            )
        ]
        attempts = [
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
            )
            for r in conn.execute(
                f"SELECT a.*, t.queue, t.user, {_QUEUED_AT} AS queued_at FROM task_attempts a"
                " JOIN tasks t ON t.id = a.task_id"
                " WHERE a.started_at < ? AND (a.finished_at IS NULL OR a.finished_at >= ?)",
                (until, since),
            )
        ]
        util = [
            UtilPoint(s["labels"]["host"], int(s["labels"]["gpu"]), t, float(ROLLUP_S), u)
            for s in self.storage.series(KINDS["gpu"], since, until, ROLLUP_S)
            for t, u in zip(s["t"], s["values"]["util_percent"], strict=True)
            if u is not None
        ]
        return History(since, until, workers, changes, attempts, util)

    def ended_counts(self) -> dict[str, int]:
        """Attempts that ended, by status, over all of history."""
        return {
            r[0]: int(r[1])
            for r in self.db.conn.execute(
                "SELECT status, COUNT(*) FROM task_attempts WHERE finished_at IS NOT NULL GROUP BY status"
            )
        }

    def dispatch_latencies(self, after_rowid: int) -> tuple[int, list[float]]:
        """Claim time minus queued time of the attempts recorded after ``after_rowid``.

        Returns the last row id seen (pass it next time) and the latencies."""
        last = after_rowid
        out: list[float] = []
        for r in self.db.conn.execute(
            f"SELECT a.rowid AS rid, a.started_at, {_QUEUED_AT} AS queued_at FROM task_attempts a"
            " WHERE a.rowid > ? ORDER BY a.rowid",
            (after_rowid,),
        ):
            last = int(r["rid"])
            if r["queued_at"] is not None:
                out.append(max(float(r["started_at"]) - float(r["queued_at"]), 0.0))
        return last, out

    def queue_waiting_since(self) -> dict[str, float]:
        """Per queue, when its longest-waiting task was queued."""
        rows: Any = self.db.conn.execute(
            "SELECT queue, MIN(queued_at) FROM tasks WHERE status = 'queued' GROUP BY queue"
        )
        return {r[0]: float(r[1]) for r in rows if r[0] is not None and r[1] is not None}
