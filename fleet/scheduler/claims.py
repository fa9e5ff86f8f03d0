"""Turning an ``up`` request into workers, and the GPU claims between them.

A GPU belongs to at most one live worker on a host.  ``up`` is idempotent: a
request for a worker that already runs with the same spec changes nothing.
This module is pure (no store, no processes) so every rule is easy to test.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fleet.errors import Conflict, UsageError
from fleet.gpus import format_gpus, resolve_gpus
from fleet.models import Worker, WorkerMode, WorkerState
from fleet.nvml import Nvml
from fleet.scheduler.schedule import make_schedule
from fleet.validate import queue_name
from fleet.validate import worker_id as check_worker_id


@dataclass
class UpRequest:
    queues: list[str]
    gpus: str | None = None
    cpu_only: bool = False
    order_fairness: bool = False
    create_queue: bool = False
    uptime: list[str] = field(default_factory=list)
    downtime: list[str] = field(default_factory=list)
    schedule_field: str = "--"  # "agent." when the specs came from the config


@dataclass
class Plan:
    new: list[Worker] = field(default_factory=list)
    existing: list[Worker] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    missing_queues: list[str] = field(default_factory=list)


def check_queues(queues: list[str]) -> list[str]:
    if not queues:
        raise UsageError("--queue: expected at least one queue name", field="queues")
    seen: set[str] = set()
    for name in queues:
        if "=" in name:
            raise UsageError(
                f"--queue {name!r}: dynamic GPU queues (NAME=COUNT) are not available in this version; "
                "give plain queue names for a static worker",
                field="queues",
            )
        queue_name(name, field="queues")
        if name in seen:
            raise UsageError(f"--queue: queue {name!r} is given twice", field="queues")
        seen.add(name)
    return queues


def plan_up(
    request: UpRequest,
    live: list[Worker],
    host: str,
    nvml: Nvml,
    worker_id_override: str = "",
) -> Plan:
    """Decide which worker(s) ``request`` means; raise on any clash, change nothing."""
    queues = check_queues(request.queues)
    schedule = make_schedule(request.uptime, request.downtime, request.schedule_field)
    plan = Plan()
    if request.cpu_only and request.gpus:
        raise UsageError("--cpu-only and --gpus exclude each other", field="gpus")
    gpus: list[int] | None
    if request.cpu_only:
        gpus = None
    elif request.gpus is None:
        if nvml.available and nvml.device_count() > 0:
            gpus, plan.warnings = resolve_gpus("all", nvml)
        else:
            gpus = None
            plan.warnings.append("no --gpus given and no NVIDIA driver here: starting a CPU-only worker")
    else:
        gpus, plan.warnings = resolve_gpus(request.gpus, nvml)

    if worker_id_override:
        wid = check_worker_id(worker_id_override, field="agent.worker_id")
    elif gpus is None:
        wid = _cpu_worker_id(host, queues, request.order_fairness, live)
    else:
        wid = f"{host}:gpu{format_gpus(gpus)}"
    worker = Worker(
        id=wid,
        host=host,
        mode=WorkerMode.STATIC,
        gpus=gpus,
        queues=queues,
        order_fairness=request.order_fairness,
        state=WorkerState.IDLE,
        state_reason="starting",
        created_at=time.time(),
        schedule={"kind": schedule.kind, "specs": list(schedule.specs)} if schedule else None,
    )
    same = next((w for w in live if w.id == wid), None)
    if same is not None:
        if _same_spec(same, worker):
            plan.existing.append(same)
            return plan
        raise Conflict(
            f"worker {wid} already runs with GPUs [{format_gpus(same.gpus)}] and queues {', '.join(same.queues)}; "
            f"stop it first (fleetctl stop {wid})",
            field="gpus",
        )
    for other in live:
        clash = sorted(set(other.gpus or []) & set(gpus or []))
        if clash:
            raise Conflict(f"GPU {clash[0]} is already claimed by worker {other.id}", field="gpus")
    plan.new.append(worker)
    return plan


def _same_spec(a: Worker, b: Worker) -> bool:
    return (a.gpus, a.queues, a.order_fairness, a.mode, a.schedule) == (
        b.gpus,
        b.queues,
        b.order_fairness,
        b.mode,
        b.schedule,
    )


def _cpu_worker_id(host: str, queues: list[str], fairness: bool, live: list[Worker]) -> str:
    """``host:cpu`` for the first CPU worker, ``host:cpu:1``, ``:cpu:2`` ... after it;
    a request matching a live CPU worker's spec names that worker (idempotent up)."""
    taken = {w.id for w in live}
    for w in live:
        if w.gpus is None and w.host == host and w.queues == queues and w.order_fairness == fairness:
            return w.id
    candidate, n = f"{host}:cpu", 0
    while candidate in taken:
        n += 1
        candidate = f"{host}:cpu:{n}"
    return candidate
