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

A dynamic pool (``<host>:dgpu``) and a services worker run each task under a
per-task worker id (``<host>:gpu1,2``, ``<host>:service:<task>``) that is no
worker of its own: every attempt is counted for the worker that **owns** it
(:func:`owners`), so the pool's GPU time is busy while its tasks hold its GPUs
and idle only when none does.  ``by="worker"`` gives one row per owner; a
pool's per-task worker ids are rows in its ``children`` (each with
``parent``), never rows of their own.

``by="host"`` gives one row per host of the fleet (every host that shares
the store): its GPUs' busy / idle / paused time, and its attempts.  A
CPU-only worker holds no GPU, so its tasks count no GPU-hours at all (not
busy, and the worker is never idle GPU time); every attempt's wall time in
the window counts in ``task_hours`` (a 2-GPU task for an hour: 2 busy
GPU-hours, 1 task-hour), which is where CPU-only work shows.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fleet.core.gpuspec import gpu_label

BY = ("gpu", "host", "worker", "queue", "user")
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
    mode: str | None = None  # static, dynamic or services (WorkerMode); None: not known


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
    owner: str | None = None  # the worker it ran for, as recorded when it started (None: from before that)


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


LIVE_AT_START = frozenset({"idle", "busy", "paused", "stopping"})


def with_modes(history: History, modes: Mapping[str, str]) -> History:
    """``history`` with each worker's mode (``{worker id: WorkerMode value}``) filled in."""
    workers = [replace(w, mode=modes.get(w.id, w.mode)) for w in history.workers]
    return replace(history, workers=workers)


def on_host(history: History, host: str) -> History:
    """``history`` narrowed to one host: its workers, their state changes, its attempts and GPUs."""
    workers = [w for w in history.workers if w.host == host]
    ids = {w.id for w in workers}
    return replace(
        history,
        workers=workers,
        changes=[c for c in history.changes if c.worker in ids],
        attempts=[a for a in history.attempts if a.host == host],
        util=[u for u in history.util if u.host == host],
    )


def _state_at(changes: Sequence[StateChange], at: float) -> str | None:
    """A worker's state at ``at`` (``changes`` sorted by time), None before its first change."""
    i = bisect.bisect_right([c.at for c in changes], at) - 1
    return changes[i].state if i >= 0 else None


def owners(history: History) -> dict[tuple[str, int], str]:
    """(task, attempt) -> the id of the worker the attempt ran for.

    The owner recorded when the attempt started, when there is one (every
    attempt since the store's ``_owner`` migration).  For one from before: an
    attempt that ran under a registered worker's id is that worker's.  One
    that ran under a per-task id belongs to the pool on its host whose GPUs
    hold all of its GPUs, or (no GPUs, ``<host>:service:<task>``) to the
    host's services worker.  Should a per-task id equal a worker's id (a
    stopped static ``h:gpu0`` and a later pool over GPU 0), the one that was
    live when the attempt started wins.  With no match the attempt's own
    worker id stands."""
    known = {w.id: w for w in history.workers}
    on_host: dict[str, list[WorkerInfo]] = {}
    for w in history.workers:
        on_host.setdefault(w.host, []).append(w)
    changes: dict[str, list[StateChange]] = {}
    for change in sorted(history.changes, key=lambda c: c.at):
        changes.setdefault(change.worker, []).append(change)

    def could_own(w: WorkerInfo, a: Attempt) -> bool:
        if w.id == a.worker or w.mode == "static":
            return False
        if a.gpus:
            return set(a.gpus) <= set(w.gpus)
        services = w.mode == "services" or (w.mode is None and w.id.startswith(f"{w.host}:services"))
        return services and a.worker == f"{a.host}:service:{a.task}"

    out: dict[tuple[str, int], str] = {}
    for a in history.attempts:
        if a.owner is not None:
            out[(a.task, a.attempt)] = a.owner
            continue
        candidates = [a.worker] if a.worker in known else []
        candidates += [w.id for w in on_host.get(a.host, []) if could_own(w, a)]
        at = max(a.started_at, history.since)
        live = [c for c in candidates if _state_at(changes.get(c, []), at) in LIVE_AT_START]
        out[(a.task, a.attempt)] = (live or candidates or [a.worker])[0]
    return out


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
    task_s: float = 0.0  # attempts' wall time in the window, whatever GPUs they hold (none: a CPU task)

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
            "task_hours": _hours(self.task_s),
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


def _keys(attempt: Attempt, by: str | None, owner: str) -> list[str]:
    if by is None:
        return []
    if by == "gpu":
        return [f"{attempt.host}:gpu{gpu_label(g)}" for g in attempt.gpus]
    if by == "host":
        return [attempt.host]
    if by == "worker":
        return [owner]
    if by == "queue":
        return [attempt.queue or "(none)"]
    return [attempt.user or "(unknown)"]


def compute(history: History, by: str | None = None) -> dict[str, Any]:
    """The report over ``history``'s window, grouped ``by`` gpu, host, worker, queue or user."""
    if by is not None and by not in BY:
        raise ValueError(f"by {by!r}: expected one of {', '.join(BY)}")
    since, until = history.since, history.until
    total = _Row(idle_s=0.0, paused_s=0.0)
    groups: dict[str, _Row] = {}
    children: dict[str, dict[str, _Row]] = {}  # by worker: owner -> per-task worker id -> its row
    owner = owners(history)

    def group(key: str) -> _Row:
        if key not in groups:
            groups[key] = _Row(idle_s=0.0, paused_s=0.0) if by in ("gpu", "host", "worker") else _Row()
        return groups[key]

    def rows_of(a: Attempt) -> list[_Row]:
        """The rows an attempt counts in: the total, its group, and under a pool its per-task worker."""
        own = owner[(a.task, a.attempt)]
        rows = [total, *(group(k) for k in _keys(a, by, own))]
        if by == "worker" and a.worker != own:
            rows.append(children.setdefault(own, {}).setdefault(a.worker, _Row()))
        return rows

    # GPU time, per (owning worker, GPU): busy from attempts, idle/paused from the worker's states
    changes: dict[str, list[StateChange]] = {}
    for change in history.changes:
        changes.setdefault(change.worker, []).append(change)
    busy: dict[tuple[str, str, int], list[Interval]] = {}
    child_busy: dict[tuple[str, str], list[Interval]] = {}  # (owner, per-task worker id), one list per GPU held
    for a in history.attempts:
        own = owner[(a.task, a.attempt)]
        for gpu in a.gpus:
            busy.setdefault((own, a.host, gpu), []).append(_span(a, since, until))
        if by == "worker" and a.worker != own:
            rows_of(a)  # the child row exists even with no GPU time
            child_busy.setdefault((own, a.worker), []).extend([_span(a, since, until)] * len(a.gpus))
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
        elif by == "host":
            group(host).add_time(*figures)
    if by == "host":  # a host whose workers hold no GPU (CPU only) has its row while one of them lived
        for w in history.workers:
            if any(state in LIVE or state == PAUSED for state in segments(changes.get(w.id, []), since, until)):
                group(w.host)
    for (own, child), spans_of in child_busy.items():
        # a per-task id names one GPU set, held by one attempt at a time: its spans never overlap
        children[own][child].add_time(sum(end - start for start, end in spans_of if end > start), None, None)
    if by in ("queue", "user"):
        for a in history.attempts:
            start, end = _span(a, since, until)
            for key in _keys(a, by, owner[(a.task, a.attempt)]):
                group(key).add_time(max(end - start, 0.0) * len(a.gpus), None, None)

    # tasks that ended, and waits of attempts that started, in the window; every attempt's wall time
    for a in history.attempts:
        rows = rows_of(a)
        start, end = _span(a, since, until)
        for row in rows:
            row.task_s += max(end - start, 0.0)
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
    for spans_of_gpu in holders.values():
        spans_of_gpu.sort(key=lambda s: s[0])
    starts = {key: [s[0] for s in spans_of_gpu] for key, spans_of_gpu in holders.items()}
    for point in history.util:
        mid = point.at + point.span_s / 2
        if not since <= mid < until:
            continue
        held = holders.get((point.host, point.gpu), [])
        i = bisect.bisect_right(starts.get((point.host, point.gpu), []), mid) - 1
        if i < 0 or not held[i][0] <= mid < held[i][1]:
            continue
        holder = held[i][2]
        rows = [total, group(f"{point.host}:gpu{point.gpu}")] if by == "gpu" else rows_of(holder)
        for row in rows:
            row.util_sum += point.util_percent
            row.util_n += 1
            if point.util_percent < LOW_UTIL_PERCENT:
                row.low_util_s += point.span_s
    has_util = bool(history.util)
    notes = [] if has_util else ["no GPU utilization samples in this window (no NVML, or no sampler running)"]

    def row_json(key: str) -> dict[str, Any]:
        under = children.get(key, {})
        nested = [{**under[c].to_json(c, has_util), "parent": key, "children": []} for c in sorted(under)]
        return {**groups[key].to_json(key, has_util), "parent": None, "children": nested}

    return {
        "since": since,
        "until": until,
        "by": by,
        "totals": total.to_json("total", has_util),
        "rows": [row_json(k) for k in sorted(groups)],
        "notes": notes,
    }
