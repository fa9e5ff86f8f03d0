"""Dynamic GPU pools and services workers: their queue specs
(:mod:`fleet.policy.queuespec`), per-task worker ids, and which requests
can never fit.  A worker row keeps the plain queue names in ``queues`` (so
wake-ups and queue tags work as for any worker) and the specs in its options
(:class:`fleet.core.models.WorkerOptions`, decoded once by the store).

Each task a pool or services worker runs gets its own worker subprocess with
its own id: ``<host>:gpu<list>`` for a pool task (GPU sets in a pool never
overlap, so the id is unique while it runs) and ``<host>:service:<task id>``
for a service.  The store records the pool as the task's owner when it
claims the task (``Task.owner``); :func:`id_taken` keeps remote executors off
these ids.

Pure: no store, no processes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fleet.core.errors import UsageError
from fleet.core.gpuspec import format_gpus
from fleet.core.models import Worker, WorkerMode, WorkerState
from fleet.policy.queuespec import QueueSpec


def worker_specs(worker: Worker) -> list[QueueSpec]:
    """The queue specs of a worker (bare names for static and services workers)."""
    if worker.mode == WorkerMode.DYNAMIC and worker.options.specs:
        return list(worker.options.specs)
    return [QueueSpec(q) for q in worker.queues]


def services_max(worker: Worker) -> int | None:
    """How many services may run at once (None: no limit)."""
    return worker.options.max


# -- per-task worker ids and ownership -------------------------------------------
def task_worker_id(worker: Worker, task_id: str, gpus: Sequence[int]) -> str:
    """The id a pool or services task runs under."""
    if worker.mode == WorkerMode.SERVICES:
        return f"{worker.host}:service:{task_id}"
    return f"{worker.host}:gpu{format_gpus(list(gpus))}"


def id_taken(worker: Worker, run_as: str, host: str, task_id: str, gpus: Sequence[int]) -> bool:
    """Whether ``run_as`` is an id ``worker`` runs tasks under: its own, or the
    one its per-task worker would get for task ``task_id`` on ``host`` with
    ``gpus`` (a pool's GPUs are inside its set; one services worker per host).
    A remote executor may not take such an id.  Who owns a running task is
    not read from ids: it is recorded (``Task.owner``, :class:`fleet.core.models.Runner`)."""
    if run_as == worker.id:
        return True
    if worker.mode == WorkerMode.STATIC or host != worker.host:
        return False
    if worker.mode == WorkerMode.DYNAMIC:
        inside = bool(gpus) and set(gpus) <= set(worker.gpus or [])
        return inside and run_as == task_worker_id(worker, task_id, gpus)
    return run_as == task_worker_id(worker, task_id, [])


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
