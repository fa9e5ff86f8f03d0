"""The accounting record, read for the report and for Prometheus.

The store's history reads (:class:`fleet.store.Store`: workers, their state
changes, task attempts by time range, counts) and the per-minute GPU
utilization from the samples, put together as a :class:`History`.
"""

from __future__ import annotations

from fleet.metrics.report import History, UtilPoint
from fleet.metrics.samples import KINDS
from fleet.metrics.storage import ROLLUP_S, SampleStore
from fleet.store import Store


class HistoryReader:
    def __init__(self, store: Store, storage: SampleStore) -> None:
        self.store = store
        self.storage = storage

    def load(self, since: float, until: float) -> History:
        """Everything the report needs for ``[since, until)``."""
        util = [
            UtilPoint(s["labels"]["host"], int(s["labels"]["gpu"]), t, float(ROLLUP_S), u)
            for s in self.storage.series(KINDS["gpu"], since, until, ROLLUP_S)
            for t, u in zip(s["t"], s["values"]["util_percent"], strict=True)
            if u is not None
        ]
        return History(
            since,
            until,
            self.store.worker_units(),
            self.store.worker_state_changes(since, until),
            self.store.attempts_between(since, until),
            util,
        )

    def ended_counts(self) -> dict[str, int]:
        """Attempts that ended, by status, over all of history."""
        return self.store.ended_counts()

    def dispatch_latencies(self, after_rowid: int) -> tuple[int, list[float]]:
        """Claim time minus queued time of the attempts recorded after ``after_rowid``.

        Returns the last row id seen (pass it next time) and the latencies."""
        return self.store.dispatch_latencies(after_rowid)

    def queue_waiting_since(self) -> dict[str, float]:
        """Per queue, when its longest-waiting task was queued."""
        return self.store.queue_waiting_since()
