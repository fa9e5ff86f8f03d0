"""Turning an ``up`` request into workers, and the GPU claims between them.

A GPU belongs to at most one live worker on a host: static workers and
dynamic pools alike, so a pool's allocation never has to look beyond its own
set.  Every queue a bare name makes a static worker; a queue with a GPU count
(``quad=4``) makes the host's dynamic pool (``<host>:dgpu``);
``--services-mode`` makes its services worker (``<host>:services``, one per
host, CPU-only).  ``up`` is idempotent: a
request for a worker that already runs with the same spec changes nothing.
This module is pure (no store, no processes) so every rule is easy to test.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

from fleet.core.errors import Conflict, UsageError
from fleet.core.gpuspec import format_gpus, gpu_label, is_mig, overlap, resolve_gpus
from fleet.core.models import DockerMode, Worker, WorkerMode, WorkerOptions, WorkerState
from fleet.core.nvml import Nvml
from fleet.core.validate import worker_id as check_worker_id
from fleet.policy.hours import make_schedule
from fleet.policy.pool_rules import worker_specs
from fleet.policy.queuespec import QueueSpec, is_dynamic, parse_queue_specs


def no_pool_gpus() -> UsageError:
    return UsageError(
        "dynamic GPU queues need GPUs: no --gpus given and no NVIDIA driver here; "
        "give --gpus (e.g. 0-7: logical GPUs work without a driver)",
        field="gpus",
    )


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
    services: bool = False  # --services-mode
    services_max: int | None = None  # --services-mode MAX
    docker: str | None = None  # --docker [IMAGE]: None is no docker mode, "" docker mode with the default image
    docker_args: list[str] = field(default_factory=list)  # daemon --docker IMAGE ARGS...: the worker's docker arguments
    # The worker's name and id as the *calling* CLI resolved them (FLEET_/CLEARML_ variables,
    # agent.worker_name / agent.worker_id); None: the manager's own configuration decides.
    worker_name: str | None = None
    worker_id: str | None = None


@dataclass
class Plan:
    new: list[Worker] = field(default_factory=list)
    existing: list[Worker] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    missing_queues: list[str] = field(default_factory=list)


def check_queues(queues: list[str]) -> list[str]:
    """The plain queue names of ``--queue`` values (``quad=4`` -> ``quad``); refuse bad ones."""
    return [spec.name for spec in parse_queue_specs(queues)]


def check_request(request: UpRequest) -> list[QueueSpec]:
    """The rules between options that need no manager and no GPU: a bad
    ``up`` is refused before anything starts."""
    specs = parse_queue_specs(request.queues)
    dynamic = is_dynamic(specs)
    if request.cpu_only and request.gpus:
        raise UsageError("--cpu-only and --gpus exclude each other", field="gpus")
    if request.services:
        if request.gpus:
            raise UsageError("--services-mode runs CPU-only tasks; it excludes --gpus", field="gpus")
        if dynamic:
            counted = next(s for s in specs if not s.own_count)
            raise UsageError(
                f"--queue {counted.text()!r}: GPU counts are for dynamic GPU pools, not --services-mode", field="queues"
            )
        if request.services_max is not None and request.services_max < 1:
            raise UsageError(f"--services-mode {request.services_max}: expected at least 1", field="services_max")
    elif request.services_max is not None:
        raise UsageError("services_max: only with --services-mode", field="services_max")
    if dynamic and request.cpu_only:
        counted = next(s for s in specs if not s.own_count)
        raise UsageError(
            f"--queue {counted.text()!r}: a queue with a GPU count needs GPUs; it cannot go with --cpu-only",
            field="queues",
        )
    return specs


def check_pool_size(specs: list[QueueSpec], size: int, gpus: str) -> None:
    """Refuse a queue count larger than the pool."""
    for spec in specs:
        if spec.high is not None and spec.high > size:
            raise UsageError(
                f"--queue {spec.text()!r}: asks for up to {spec.high} GPUs but the pool has {size} (--gpus {gpus})",
                field="queues",
            )


def plan_up(
    request: UpRequest,
    live: list[Worker],
    host: str,
    nvml: Nvml,
    worker_id_override: str = "",
    machine: str | None = None,
) -> Plan:
    """Decide which worker(s) ``request`` means; raise on any clash, change nothing.

    ``host`` names the workers (the id's host part: the ``up``'s worker name);
    ``machine`` is the host they run on (the manager's: the row's ``host``, by
    which GPUs clash and a manager finds its own workers; default ``host``).
    ``live`` may hold other machines' workers (a shared store): their GPUs are
    theirs, and an id of theirs is not taken over."""
    machine = machine or host
    specs = check_request(request)
    queues = [spec.name for spec in specs]
    dynamic = is_dynamic(specs)
    schedule = make_schedule(request.uptime, request.downtime, request.schedule_field)
    plan = Plan()
    gpus: list[int] | None
    if request.cpu_only or request.services:
        gpus = None
    elif request.gpus is None:
        if nvml.available and nvml.device_count() > 0:
            gpus, plan.warnings = resolve_gpus("all", nvml)
        elif dynamic:
            raise no_pool_gpus()
        else:
            gpus = None
            plan.warnings.append("no --gpus given and no NVIDIA driver here: starting a CPU-only worker")
    else:
        gpus, plan.warnings = resolve_gpus(request.gpus, nvml)

    mode = WorkerMode.SERVICES if request.services else WorkerMode.DYNAMIC if dynamic else WorkerMode.STATIC
    if mode == WorkerMode.STATIC and gpus and len({is_mig(g) for g in gpus}) > 1:
        raise UsageError(
            f"--gpus {request.gpus or 'all'}: whole GPUs and MIG slices together; a static worker gives a task "
            "its whole group, and a task gets one kind (start a worker for each, or a dynamic pool)",
            field="gpus",
        )
    options = WorkerOptions()
    if mode == WorkerMode.DYNAMIC:
        assert gpus is not None
        check_pool_size(specs, len(gpus), request.gpus or "all")
        options = WorkerOptions(specs=tuple(specs))
    elif mode == WorkerMode.SERVICES and request.services_max is not None:
        options = WorkerOptions(max=request.services_max)
    if request.docker is not None:
        docker = DockerMode(request.docker.strip(), tuple(request.docker_args or ()))
        options = dataclasses.replace(options, docker=docker)

    fixed = worker_id_override
    if fixed:
        check_worker_id(fixed, field="agent.worker_id")
        wid = fixed
    elif mode == WorkerMode.SERVICES:
        wid = _services_worker_id(host, live)
    elif mode == WorkerMode.DYNAMIC:
        wid = _pool_worker_id(host, gpus or [], live)
    elif gpus is None:
        wid = _cpu_worker_id(host, queues, request.order_fairness, live)
    else:
        wid = f"{host}:gpu{format_gpus(gpus)}"
    worker = Worker(
        id=wid,
        host=machine,
        mode=mode,
        gpus=gpus,
        queues=queues,
        order_fairness=request.order_fairness,
        state=WorkerState.IDLE,
        state_reason="starting",
        created_at=time.time(),
        schedule=schedule,
        options=options,
    )
    if fixed:
        worker.id = wid = _fixed_worker_id(fixed, worker, live)
    same = next((w for w in live if w.id == wid), None)
    if same is not None and same.host != machine:
        raise Conflict(
            f"worker {wid} runs on host {same.host}; give this host another worker name (agent.worker_name)",
            field="worker_name",
        )
    if same is not None:
        if _same_spec(same, worker):
            plan.existing.append(same)
            return plan
        raise Conflict(
            f"worker {wid} already runs with GPUs [{format_gpus(same.gpus)}] and queues {', '.join(_shown_queues(same))}; "
            f"stop it first (fleetctl stop {wid})",
            field="gpus",
        )
    if mode == WorkerMode.SERVICES:
        other = next((w for w in live if w.mode == WorkerMode.SERVICES and w.host == machine), None)
        if other is not None:
            raise Conflict(
                f"services worker {other.id} already runs on this host (queues {', '.join(other.queues)}); "
                f"one per host: stop it first (fleetctl stop {other.id})",
                field="services_max",
            )
    for other in live:
        if other.host != machine:
            continue  # another machine's GPUs
        clash = overlap(gpus, other.gpus)  # a GPU and its own MIG slices clash too
        if clash is not None:
            raise Conflict(f"GPU {gpu_label(clash)} is already claimed by worker {other.id}", field="gpus")
    plan.new.append(worker)
    return plan


def _shown_queues(worker: Worker) -> list[str]:
    return [spec.text() for spec in worker_specs(worker)]


def _same_spec(a: Worker, b: Worker) -> bool:
    return (a.gpus, a.queues, a.order_fairness, a.mode, a.schedule, a.options) == (
        b.gpus,
        b.queues,
        b.order_fairness,
        b.mode,
        b.schedule,
        b.options,
    )


def _cpu_worker_id(host: str, queues: list[str], fairness: bool, live: list[Worker]) -> str:
    """``host:cpu`` for the first CPU worker, ``host:cpu:1``, ``:cpu:2`` ... after it;
    a request matching a live CPU worker's spec names that worker (idempotent up)."""
    taken = {w.id for w in live}
    for w in live:
        if w.gpus is None and _named(w, host) and w.queues == queues and w.order_fairness == fairness:
            return w.id
    candidate, n = f"{host}:cpu", 0
    while candidate in taken:
        n += 1
        candidate = f"{host}:cpu:{n}"
    return candidate


def _pool_worker_id(host: str, gpus: list[int], live: list[Worker]) -> str:
    """``host:dgpu`` for the first dynamic pool, ``host:dgpu:1`` ... for more
    (on other GPUs); a request for a live pool's GPUs names that pool."""
    for w in live:
        if w.mode == WorkerMode.DYNAMIC and _named(w, host) and w.gpus == gpus:
            return w.id
    return _first_free(f"{host}:dgpu", {w.id for w in live})


def _services_worker_id(host: str, live: list[Worker]) -> str:
    for w in live:
        if w.mode == WorkerMode.SERVICES and _named(w, host):
            return w.id
    return _first_free(f"{host}:services", {w.id for w in live})


def _named(worker: Worker, host: str) -> bool:
    """Whether the worker's id has ``host`` as its host part."""
    return worker.id.startswith(f"{host}:")


def _fixed_worker_id(base: str, worker: Worker, live: list[Worker]) -> str:
    """A fixed ``agent.worker_id``: the first worker takes it as is, more workers
    get ClearML's suffixes (``id:1``, ``id:2`` ...); a request matching a live
    worker's spec names that worker (idempotent up)."""
    family = [w for w in live if w.id == base or _suffix_of(w.id, base)]
    for w in family:
        if _same_spec(w, worker):
            return w.id
    return _first_free(base, {w.id for w in live})


def _suffix_of(wid: str, base: str) -> bool:
    head, sep, tail = wid.rpartition(":")
    return bool(sep) and head == base and tail.isdigit()


def _first_free(base: str, taken: set[str]) -> str:
    candidate, n = base, 0
    while candidate in taken:
        n += 1
        candidate = f"{base}:{n}"
    return candidate
