"""Which queued task gets which GPUs of a dynamic pool, now.  Pure.

Inputs: the pool's GPUs, the GPUs its running tasks hold, the GPUs busy with
processes fleet did not start, the pool's queues in the order they are tried,
each queue's head task, and optionally the GPUs' topology.  Output: the tasks
to start with their GPUs, the reservations, and why each waiting queue waits.

Rules, decided here once:

- Queues are tried in order.  A queue's head task wants (MIN, MAX) GPUs: the
  queue's count (``quad=4``: 4-4, ``opportunistic=1-4``: 1-4) or, for a
  bare name, the task's own count.  It starts when at least MIN GPUs are free
  and gets as many as are free up to MAX.
- No starvation: a head that cannot start reserves every free GPU (it needs
  them all and more), so GPUs that free up go to the highest waiting request
  first; the queues after it only see GPUs nobody reserved (backfill).  The
  reservation is recomputed from scratch at every decision, so it holds
  exactly the free GPUs, never more than the request needs, and the task
  starts at the first decision that sees MIN GPUs free, however many smaller
  tasks wait behind it.
- One holder per request across pools and hosts: a head another pool
  already reserves for (``Head.held_by``, read from the store) is started
  here if it fits now, and otherwise neither reserved nor waited for: the
  queue is served from its next request (``Head.then``) by the same rule,
  and the queues after it go on.  So two pools never hold GPUs idle for the
  same task, and each still holds for the first request nobody holds.
- A request that cannot be met even once every running task of the pool has
  ended (because GPUs are busy with other people's processes) reserves
  nothing: holding GPUs for it would idle them for nothing.  It waits with
  that reason, and the queues after it go on.
- MIG: a pool's units may be whole GPUs and MIG slices (``--gpus all`` on a
  host where some GPUs are in MIG mode); a task gets whole GPUs or slices,
  never both: whole GPUs when enough are free, else slices.
- Drained GPUs count as busy ones do: never handed out.
- GPU choice: with topology, the set with the closest worst pair (then the
  closest pairs in sum, then the lowest indices), where distance is NVML's
  common-ancestor level (same board < one PCIe switch < several < host bridge
  < NUMA node < across sockets; an NVLink counts as closest); without
  topology, the lowest free indices.

``reserve=False`` gives the naive first-fit allocator (the benchmark's
baseline, and ClearML's open-source behaviour): a head that does not fit is
skipped and smaller requests behind it take the GPUs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet.core.gpuspec import format_gpus, gpu_label, is_mig
from fleet.policy.queuespec import QueueSpec

Topology = Mapping[tuple[int, int], int]  # (a, b) with a < b -> distance; lower is closer
FAR = 100  # distance of a pair the topology does not list
MAX_COMBINATIONS = 5000  # exhaustive search below this, greedy above


@dataclass(frozen=True)
class Head:
    """The first task of a queue that the pool could run.  With ``held_by``,
    another pool (on this host or another) reserves GPUs for it: this pool
    starts it if it fits now, never reserves for it, and otherwise serves
    ``then``, the queue's first task no other pool holds (if any)."""

    task_id: str
    gpus_needed: int | None = None
    held_by: str | None = None  # the pool that reserves GPUs for it, as shown
    then: Head | None = None


@dataclass(frozen=True)
class Start:
    queue: str
    task_id: str
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class Reservation:
    queue: str
    task_id: str
    need: int
    gpus: tuple[int, ...]  # the free GPUs held for it now (fewer than it needs)


@dataclass
class Decision:
    starts: list[Start] = field(default_factory=list)
    reservations: list[Reservation] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)  # queue -> why its head waits
    free: tuple[int, ...] = ()  # free after the starts, reserved ones included


@dataclass(frozen=True)
class PoolChild:
    """A task a pool runs: its per-task worker id, queue, GPUs and worker pid."""

    worker: str
    task_id: str
    queue: str
    gpus: tuple[int, ...]
    pid: int


@dataclass(frozen=True)
class PoolState:
    """A pool's or services worker's last decision, as it publishes it in its
    row (``Worker.pool``) for ``status``: its GPUs, the free ones, its running
    children, reservations, why queue heads wait, busy GPUs (GPU -> why) and
    the services limit."""

    gpus: tuple[int, ...] = ()
    free: tuple[int, ...] = ()
    children: tuple[PoolChild, ...] = ()
    reservations: tuple[Reservation, ...] = ()
    waiting: Mapping[str, str] = field(default_factory=dict)
    busy: Mapping[int, str] = field(default_factory=dict)
    max: int | None = None

    def as_json(self, gpu: Callable[[int], int | str] = int, key: Callable[[int], str] = str) -> dict[str, Any]:
        """This decision as plain JSON, each GPU written by ``gpu`` and a busy GPU's key by
        ``key``: the store keeps indices, the API shows labels."""
        return {
            "gpus": [gpu(g) for g in self.gpus],
            "free": [gpu(g) for g in self.free],
            "children": [
                {
                    "worker": c.worker,
                    "task": c.task_id,
                    "queue": c.queue,
                    "gpus": [gpu(g) for g in c.gpus],
                    "pid": c.pid,
                }
                for c in self.children
            ],
            "reservations": [
                {"queue": r.queue, "task": r.task_id, "need": r.need, "gpus": [gpu(g) for g in r.gpus]}
                for r in self.reservations
            ],
            "waiting": dict(self.waiting),
            "busy": {key(g): why for g, why in sorted(self.busy.items())},
            "max": self.max,
        }


def _short(task_id: str) -> str:
    return task_id[:8]


def allocate(
    pool: Sequence[int],
    in_use: Collection[int],
    busy: Mapping[int, str],
    queues: Sequence[QueueSpec],
    heads: Mapping[str, Head],
    topology: Topology | None = None,
    *,
    reserve: bool = True,
) -> Decision:
    """Decide one round: at most one start per queue (call again with the
    next heads to fill more).  ``busy`` maps a GPU to why it is busy; busy
    GPUs that the pool's own tasks hold are ignored."""
    held = set(in_use)
    foreign = {g: why for g, why in busy.items() if g in pool and g not in held}
    free = [g for g in pool if g not in held and g not in foreign]
    usable = len(pool) - len(foreign)
    decision = Decision()
    blocker: str | None = None  # the reservation that took the free GPUs
    elsewhere: dict[str, str] = {}  # queue -> its head, reserved by another pool
    for spec in queues:
        head = heads.get(spec.name)
        if head is not None and head.held_by is not None:
            low, high = spec.wants(head.gpus_needed)
            kind = _one_kind(free, low) if low <= usable else []
            if kind:  # it fits here now: start it (its reservation elsewhere ends with the claim)
                free = _start(decision, spec.name, head, kind, high, topology, free)
                continue
            elsewhere[spec.name] = f"task {_short(head.task_id)} is reserved on {head.held_by}"
            head = head.then
        if head is None:
            continue
        low, high = spec.wants(head.gpus_needed)
        who = f"task {_short(head.task_id)}"
        if low > len(pool):
            decision.waiting[spec.name] = f"{who} asks for {low} GPUs; this pool has {len(pool)}"
            continue
        if low > usable:
            detail = "; ".join(f"GPU {gpu_label(g)}: {why}" for g, why in sorted(foreign.items()))
            decision.waiting[spec.name] = (
                f"{who} needs {low} GPUs; {len(foreign)} of the pool's {len(pool)} are busy or drained ({detail})"
            )
            continue
        kind = _one_kind(free, low)
        if kind:
            free = _start(decision, spec.name, head, kind, high, topology, free)
            continue
        if blocker is not None:
            decision.waiting[spec.name] = f"{who} needs {low} GPUs; the free ones are reserved for {blocker}"
            continue
        if reserve:
            decision.reservations.append(Reservation(spec.name, head.task_id, low, tuple(free)))
            held_now = f"holding GPU {format_gpus(free)}" if free else "none free yet"
            decision.waiting[spec.name] = (
                f"{who} needs {low} GPUs, {len(free)} free: reserving GPUs as they free up ({held_now})"
            )
            blocker = f"{spec.name} ({who}, needs {low})"
            free = []
        else:
            decision.waiting[spec.name] = f"{who} needs {low} GPUs, {len(free)} free"
    for name, note in elsewhere.items():
        behind = decision.waiting.get(name)
        decision.waiting[name] = f"{note}; behind it, {behind}" if behind else note
    taken = {g for s in decision.starts for g in s.gpus}
    decision.free = tuple(g for g in pool if g not in held and g not in foreign and g not in taken)
    return decision


def _start(
    decision: Decision,
    queue: str,
    head: Head,
    kind: Sequence[int],
    high: int,
    topology: Topology | None,
    free: Sequence[int],
) -> list[int]:
    """Start ``head`` on the best ``high`` (at most) of ``kind``; the GPUs left free."""
    chosen = choose(kind, min(high, len(kind)), topology)
    decision.starts.append(Start(queue, head.task_id, chosen))
    return [g for g in free if g not in chosen]


def _one_kind(free: Sequence[int], low: int) -> list[int]:
    """The free whole GPUs if at least ``low`` are, else the free MIG slices if
    at least ``low`` are, else nothing: a task never gets both kinds."""
    for kind in ([g for g in free if not is_mig(g)], [g for g in free if is_mig(g)]):
        if len(kind) >= low:
            return kind
    return []


def choose(free: Sequence[int], n: int, topology: Topology | None = None) -> tuple[int, ...]:
    """``n`` GPUs out of ``free``: the closest set by ``topology``, else the lowest indices."""
    ordered = sorted(free)
    if n >= len(ordered):
        return tuple(ordered)
    if not topology or n <= 1:
        return tuple(ordered[:n])

    def cost(group: Sequence[int]) -> tuple[int, int]:
        pairs = [topology.get((a, b), FAR) for a, b in itertools.combinations(group, 2)]
        return max(pairs), sum(pairs)

    if math.comb(len(ordered), n) <= MAX_COMBINATIONS:
        return min(itertools.combinations(ordered, n), key=lambda group: (cost(group), group))
    best: tuple[int, ...] | None = None
    for seed in ordered:  # greedy from each start: add the GPU closest to the group so far
        group = [seed]
        while len(group) < n:
            rest = [g for g in ordered if g not in group]
            group.append(min(rest, key=lambda g: (max(topology.get(_pair(g, m), FAR) for m in group), g)))
        candidate = tuple(sorted(group))
        if best is None or (cost(candidate), candidate) < (cost(best), best):
            best = candidate
    assert best is not None
    return best


def _pair(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)
