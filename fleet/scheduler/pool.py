"""Dynamic GPU pools and services workers: queue specs, per-task worker ids,
which running task belongs to which worker, and which requests can never fit.

``--queue quad=4 dual=2 opportunistic=1-4 any`` gives each queue a GPU count:
``NAME=N`` (exactly N), ``NAME=MIN-MAX`` (at least MIN, as many as are free up
to MAX), ``NAME=-MAX`` (1 to MAX) or a bare ``NAME`` (each task's own
``--gpus``, default 1).  A worker row keeps the plain names in ``queues`` (so
wake-ups and queue tags work as for any worker) and the specs in ``options``.

Each task a pool or services worker runs gets its own worker subprocess with
its own id: ``<host>:gpu<list>`` for a pool task (GPU sets in a pool never
overlap, so the id is unique while it runs) and ``<host>:service:<task id>``
for a service.  :func:`owns` is the one rule that maps such a task back to its
pool, for crash recovery and for ``status``.

Pure: no store, no processes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fleet.errors import UsageError
from fleet.gpus import MAX_GPUS, format_gpus
from fleet.models import Task, Worker, WorkerMode, WorkerState
from fleet.validate import queue_name

_COUNT = re.compile(r"^(\d*)(?:-(\d+))?$")
SPEC_HELP = "expected NAME=COUNT, NAME=MIN-MAX or NAME=-MAX with whole numbers of GPUs"


@dataclass(frozen=True)
class QueueSpec:
    """A queue of a dynamic pool and the GPUs each of its tasks gets.

    ``low``/``high`` are None for a bare name: the task's own count decides."""

    name: str
    low: int | None = None
    high: int | None = None

    @property
    def own_count(self) -> bool:
        return self.low is None

    def wants(self, gpus_needed: int | None) -> tuple[int, int]:
        """(MIN, MAX) GPUs for a task of this queue.  A pool hands out at least
        one GPU, so ``--gpus 0`` on a bare-name queue gets one."""
        if self.low is None or self.high is None:
            n = max(1, gpus_needed or 1)
            return n, n
        return self.low, self.high

    def text(self) -> str:
        if self.low is None:
            return self.name
        return f"{self.name}={self.low}" if self.low == self.high else f"{self.name}={self.low}-{self.high}"


def parse_queue_spec(text: str) -> QueueSpec:
    """``quad=4``, ``opportunistic=1-4``, ``x=-4`` (1-4) or a bare name; a bad
    count is a :class:`UsageError` naming it."""
    name, sep, count = text.partition("=")
    queue_name(name, field="queues")
    if not sep:
        return QueueSpec(name)
    match = _COUNT.fullmatch(count)
    if match is None or (not match.group(1) and not match.group(2)):
        raise UsageError(f"--queue {text!r}: {count!r} is not a GPU count; {SPEC_HELP}", field="queues")
    low = int(match.group(1)) if match.group(1) else 1
    high = int(match.group(2)) if match.group(2) is not None else low
    if low < 1 or high < 1:
        raise UsageError(f"--queue {text!r}: a queue needs at least 1 GPU per task", field="queues")
    if high < low:
        raise UsageError(f"--queue {text!r}: range {low}-{high} goes down; write {high}-{low}", field="queues")
    if high > MAX_GPUS:
        raise UsageError(f"--queue {text!r}: more than {MAX_GPUS} GPUs", field="queues")
    return QueueSpec(name, low, high)


def parse_queue_specs(queues: Sequence[str]) -> list[QueueSpec]:
    """Parse every ``--queue`` value; refuse an empty list and a queue named twice."""
    if not queues:
        raise UsageError("--queue: expected at least one queue name", field="queues")
    specs: list[QueueSpec] = []
    seen: set[str] = set()
    for text in queues:
        spec = parse_queue_spec(text)
        if spec.name in seen:
            raise UsageError(f"--queue: queue {spec.name!r} is given twice", field="queues")
        seen.add(spec.name)
        specs.append(spec)
    return specs


def is_dynamic(specs: Iterable[QueueSpec]) -> bool:
    """Dynamic mode: at least one queue carries a GPU count."""
    return any(not s.own_count for s in specs)


def worker_specs(worker: Worker) -> list[QueueSpec]:
    """The queue specs of a worker (bare names for static and services workers)."""
    texts = (worker.options or {}).get("specs")
    if worker.mode == WorkerMode.DYNAMIC and isinstance(texts, list):
        return [parse_queue_spec(str(t)) for t in texts]
    return [QueueSpec(q) for q in worker.queues]


def services_max(worker: Worker) -> int | None:
    """How many services may run at once (None: no limit)."""
    value = (worker.options or {}).get("max")
    return int(value) if isinstance(value, int) and value > 0 else None


# -- per-task worker ids and ownership -------------------------------------------
def task_worker_id(worker: Worker, task_id: str, gpus: Sequence[int]) -> str:
    """The id a pool or services task runs under."""
    if worker.mode == WorkerMode.SERVICES:
        return f"{worker.host}:service:{task_id}"
    return f"{worker.host}:gpu{format_gpus(list(gpus))}"


def owns(worker: Worker, task: Task) -> bool:
    """True when ``task`` runs (or ran) on behalf of ``worker``.

    A static worker runs its task under its own id.  A pool's task runs as
    ``<host>:gpu<list>`` with GPUs inside the pool's set (the GPU sets of a
    host's workers never overlap); a service as ``<host>:service:<task id>``
    (one services worker per host)."""
    if task.worker == worker.id:
        return True
    if worker.mode == WorkerMode.STATIC or task.host != worker.host or task.worker is None:
        return False
    if worker.mode == WorkerMode.DYNAMIC:
        inside = bool(task.gpus) and set(task.gpus) <= set(worker.gpus or [])
        return inside and task.worker == task_worker_id(worker, task.id, task.gpus)
    return task.worker == task_worker_id(worker, task.id, [])


# -- requests that can never fit ---------------------------------------------------
@dataclass(frozen=True)
class Server:
    """One live worker that pulls from a queue, as the fit rule sees it."""

    id: str
    mode: str
    size: int  # GPUs of the worker (0 for CPU-only)
    spec: QueueSpec


def servers(workers: Iterable[Worker], queue: str) -> list[Server]:
    """The live workers that pull from ``queue``."""
    out = []
    for w in workers:
        if w.state == WorkerState.DEAD or queue not in w.queues:
            continue
        spec = next((s for s in worker_specs(w) if s.name == queue), QueueSpec(queue))
        out.append(Server(w.id, w.mode.value, len(w.gpus or []), spec))
    return out


def _gives(server: Server, need: int) -> bool:
    """``server`` can run a task asking ``need`` GPUs with exactly that many:
    a static or services worker (the fit rule decides later), a pool queue
    taking the task's own count when the pool is large enough, or a pool
    queue whose fixed count or range includes ``need``."""
    if server.mode != WorkerMode.DYNAMIC.value:
        return True
    if server.spec.own_count:
        return server.size >= need
    low, high = server.spec.wants(need)
    return low <= need <= high


def oversized(queue: str, need: int, servers: Sequence[Server]) -> str | None:
    """Why a task asking ``need`` GPUs on ``queue`` can never get that count,
    when every live worker serving the queue is a dynamic pool that gives a
    different one (too small for the task's own count, or a fixed ``NAME=N`` /
    ``NAME=MIN-MAX`` that leaves ``need`` out); None when some worker could
    give it (or no worker serves the queue yet: the task waits for one)."""
    if not servers or need <= 0 or any(_gives(s, need) for s in servers):
        return None
    if all(s.spec.own_count for s in servers):
        largest = max(servers, key=lambda s: s.size)
        return (
            f"--gpus {need}: queue {queue!r} is served only by dynamic GPU pools smaller than that "
            f"(the largest, {largest.id}, has {largest.size} GPUs)"
        )
    gives = ", ".join(f"{s.id} gives {_count_text(s)}" for s in servers)
    return f"--gpus {need}: no worker serving queue {queue!r} gives that many GPUs ({gives}); ask for one of those"


def _count_text(server: Server) -> str:
    if server.spec.own_count:
        return f"up to {server.size}"
    low, high = server.spec.wants(None)
    return str(low) if low == high else f"{low}-{high}"


def refuse_oversized(workers: Iterable[Worker], queue: str, need: int) -> None:
    """``submit --gpus N``: raise :class:`UsageError` when :func:`oversized` says so."""
    reason = oversized(queue, need, servers(workers, queue))
    if reason is not None:
        raise UsageError(reason, field="gpus")


def too_large_reason(pool_size: int, pool_id: str) -> str:
    """The ``status_reason`` of a queued task larger than the pool serving it."""
    return f"asks for more GPUs than pool {pool_id} has ({pool_size}): waiting for a worker with enough GPUs"
