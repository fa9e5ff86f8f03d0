"""The usage report: GPU-hours and task figures, from the accounting record.

Pure functions of a :class:`History` (the workers' state changes, the task
attempts and per-minute GPU utilization over a window); the store and the
clock are read elsewhere (:mod:`fleet.metrics.history`), so every figure can
be checked against a history built by hand.

Per GPU (a worker's GPU on a host), each instant of the window is:

- **busy** while a task attempt holds the GPU (from its claim to its end;
  environment builds included: the GPU is handed out);
- else **paused** while its worker is paused (working hours, ``force off``);
- else **idle** while its worker is ``idle`` or ``busy``;
- else off (the worker is stopping, dead, or does not exist) and not counted.

Tasks count attempts that *ended* in the window, by how they ended; the
success rate is completed / (completed + failed) (a stop is a person's
decision, not an outcome).  Queue wait is claim time minus the time the
attempt was queued, for attempts that *started* in the window.  The mean
utilization of busy GPUs averages the per-minute samples taken while the GPU
was busy; ``busy_low_util_gpu_hours`` is the busy time with utilization under
:data:`LOW_UTIL_PERCENT` — GPUs handed out but barely used.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet.gpus import gpu_label

BY = ("gpu", "worker", "queue", "user")
LOW_UTIL_PERCENT = 10.0
LIVE = frozenset({"idle", "busy"})
PAUSED = "paused"
ENDED = ("completed", "failed", "stopped")

Interval = tuple[float, float]


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    host: str
    gpus: tuple[int, ...]  # empty for a CPU-only worker


@dataclass(frozen=True)
class StateChange:
    worker: str
    at: float
    state: str


@dataclass(frozen=True)
class Attempt:
    task: str
    attempt: int
    worker: str
    host: str
    gpus: tuple[int, ...]
    queue: str | None
    user: str
    status: str  # in_progress, completed, failed, stopped
    started_at: float
    finished_at: float | None  # None while it runs
    queued_at: float | None  # when this attempt was queued (None: unknown)


@dataclass(frozen=True)
class UtilPoint:
    host: str
    gpu: int
    at: float  # start of the sample's span
    span_s: float
    util_percent: float


@dataclass(frozen=True)
class History:
    since: float
    until: float
    workers: Sequence[WorkerInfo]
    changes: Sequence[StateChange]  # include each worker's last change before ``since``
    attempts: Sequence[Attempt]
    util: Sequence[UtilPoint] = ()


@dataclass
class _Row:
    busy_s: float = 0.0
    idle_s: float | None = None
    paused_s: float | None = None
    ended: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENDED, 0))
    waits: list[float] = field(default_factory=list)
    util_sum: float = 0.0
    util_n: int = 0
    low_util_s: float = 0.0

    def add_time(self, busy: float, idle: float | None, paused: float | None) -> None:
        self.busy_s += busy
        if idle is not None:
            self.idle_s = (self.idle_s or 0.0) + idle
        if paused is not None:
            self.paused_s = (self.paused_s or 0.0) + paused

    def to_json(self, key: str, has_util: bool) -> dict[str, Any]:
        done, failed = self.ended["completed"], self.ended["failed"]
        return {
            "key": key,
            "busy_gpu_hours": _hours(self.busy_s),
            "idle_gpu_hours": _hours(self.idle_s),
            "paused_gpu_hours": _hours(self.paused_s),
            "completed": done,
            "failed": failed,
            "stopped": self.ended["stopped"],
            "success_rate": round(done / (done + failed), 4) if done + failed else None,
            "waits": len(self.waits),
            "wait_p50_s": _r(percentile(self.waits, 50)),
            "wait_p95_s": _r(percentile(self.waits, 95)),
            "busy_gpu_util_percent": _r(self.util_sum / self.util_n) if self.util_n else None,
            "busy_low_util_gpu_hours": _hours(self.low_util_s) if has_util else None,
        }


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 4)


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), interpolating between closest ranks; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# -- interval arithmetic ---------------------------------------------------------------
def merge(intervals: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def length(intervals: Iterable[Interval]) -> float:
    return sum(end - start for start, end in intervals)


def overlap(a: list[Interval], b: list[Interval]) -> float:
    """Total length of the intersection of two merged interval lists."""
    total, i, j = 0.0, 0, 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        total += max(end - start, 0.0)
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def segments(changes: Sequence[StateChange], since: float, until: float) -> dict[str, list[Interval]]:
    """One worker's time in each state within ``[since, until)``."""
    out: dict[str, list[Interval]] = {}
    ordered = sorted(changes, key=lambda c: c.at)
    for i, change in enumerate(ordered):
        end = ordered[i + 1].at if i + 1 < len(ordered) else until
        start, end = max(change.at, since), min(end, until)
        if end > start:
            out.setdefault(change.state, []).append((start, end))
    return {state: merge(spans) for state, spans in out.items()}


# -- the report ------------------------------------------------------------------------
def _span(attempt: Attempt, since: float, until: float) -> Interval:
    end = attempt.finished_at if attempt.finished_at is not None else until
    return max(attempt.started_at, since), min(end, until)


def _keys(attempt: Attempt, by: str | None) -> list[str]:
    if by is None:
        return []
    if by == "gpu":
        return [f"{attempt.host}:gpu{gpu_label(g)}" for g in attempt.gpus]
    if by == "worker":
        return [attempt.worker]
    if by == "queue":
        return [attempt.queue or "(none)"]
    return [attempt.user or "(unknown)"]


def compute(history: History, by: str | None = None) -> dict[str, Any]:
    """The report over ``history``'s window, grouped ``by`` gpu, worker, queue or user."""
    if by is not None and by not in BY:
        raise ValueError(f"by {by!r}: expected one of {', '.join(BY)}")
    since, until = history.since, history.until
    total = _Row(idle_s=0.0, paused_s=0.0)
    groups: dict[str, _Row] = {}

    def group(key: str) -> _Row:
        if key not in groups:
            groups[key] = _Row(idle_s=0.0, paused_s=0.0) if by in ("gpu", "worker") else _Row()
        return groups[key]

    # GPU time, per (worker, GPU): busy from attempts, idle/paused from the worker's states
    changes: dict[str, list[StateChange]] = {}
    for change in history.changes:
        changes.setdefault(change.worker, []).append(change)
    busy: dict[tuple[str, str, int], list[Interval]] = {}
    for a in history.attempts:
        for gpu in a.gpus:
            busy.setdefault((a.worker, a.host, gpu), []).append(_span(a, since, until))
    units = set(busy) | {(w.id, w.host, g) for w in history.workers for g in w.gpus}
    for worker, host, gpu in sorted(units):
        states = segments(changes.get(worker, []), since, until)
        spans = merge(busy.get((worker, host, gpu), []))
        live = merge(s for state in LIVE for s in states.get(state, []))
        paused = states.get(PAUSED, [])
        figures = (length(spans), length(live) - overlap(live, spans), length(paused) - overlap(paused, spans))
        total.add_time(*figures)
        if by == "gpu":
            group(f"{host}:gpu{gpu_label(gpu)}").add_time(*figures)
        elif by == "worker":
            group(worker).add_time(*figures)
    if by in ("queue", "user"):
        for a in history.attempts:
            start, end = _span(a, since, until)
            for key in _keys(a, by):
                group(key).add_time(max(end - start, 0.0) * len(a.gpus), None, None)

    # tasks that ended, and waits of attempts that started, in the window
    for a in history.attempts:
        rows = [total, *(group(k) for k in _keys(a, by))]
        if a.status in ENDED and a.finished_at is not None and since <= a.finished_at < until:
            for row in rows:
                row.ended[a.status] += 1
        if a.queued_at is not None and since <= a.started_at < until:
            for row in rows:
                row.waits.append(max(a.started_at - a.queued_at, 0.0))

    # utilization of busy GPUs
    holders: dict[tuple[str, int], list[tuple[float, float, Attempt]]] = {}
    for a in history.attempts:
        for gpu in a.gpus:
            holders.setdefault((a.host, gpu), []).append((*_span(a, since, until), a))
    for spans_of in holders.values():
        spans_of.sort(key=lambda s: s[0])
    starts = {key: [s[0] for s in spans_of] for key, spans_of in holders.items()}
    for point in history.util:
        mid = point.at + point.span_s / 2
        if not since <= mid < until:
            continue
        held = holders.get((point.host, point.gpu), [])
        i = bisect.bisect_right(starts.get((point.host, point.gpu), []), mid) - 1
        if i < 0 or not held[i][0] <= mid < held[i][1]:
            continue
        holder = held[i][2]
        keys = [f"{point.host}:gpu{point.gpu}"] if by == "gpu" else _keys(holder, by)
        for row in [total, *(group(k) for k in keys)]:
            row.util_sum += point.util_percent
            row.util_n += 1
            if point.util_percent < LOW_UTIL_PERCENT:
                row.low_util_s += point.span_s
    has_util = bool(history.util)
    notes = [] if has_util else ["no GPU utilization samples in this window (no NVML, or no sampler running)"]
    return {
        "since": since,
        "until": until,
        "by": by,
        "totals": total.to_json("total", has_util),
        "rows": [groups[k].to_json(k, has_util) for k in sorted(groups)],
        "notes": notes,
    }
