"""Workers: list, get, create (= ``up``), delete (= ``stop``)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Path

from fleet.api.deps import ManagerDep, WorkerId
from fleet.api.schemas import RuntimePropertyBody, StopBody, WorkersCreate
from fleet.api.serialize import masked_docker, pool_json, worker_json
from fleet.errors import NotFound, UsageError
from fleet.gpus import gpu_label, overlap
from fleet.manager import Manager
from fleet.models import TaskStatus, Worker, WorkerMode, WorkerState
from fleet.scheduler.claims import UpRequest, check_queues
from fleet.scheduler.pool import owns, services_max, worker_specs
from fleet.store import Store

router = APIRouter(tags=["workers"])
PropertyKey = Annotated[str, Path(pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")]


def _running(store: Store, workers: list[Worker]) -> dict[str, list[str]]:
    """Worker id -> its running task ids; a pool's or services worker's tasks
    run under per-task ids and are counted for it (:func:`owns`)."""
    out: dict[str, list[str]] = {}
    for task in store.list_tasks(status=[TaskStatus.IN_PROGRESS], limit=100_000, summary=True)[0]:
        owner = next((w.id for w in workers if owns(w, task)), task.worker)
        if owner:
            out.setdefault(owner, []).append(task.id)
    return out


def workers_json(store: Store, workers: list[Worker], hidden: Iterable[str] = ()) -> list[dict[str, Any]]:
    running = _running(store, workers)
    props = store.runtime_properties()
    drains = store.drained_gpus()
    out = []
    for w in workers:
        answer = worker_json(w, running.get(w.id, []), props.get(w.id, {}))
        answer["queue_specs"] = [spec.text() for spec in worker_specs(w)]
        answer["services_max"] = services_max(w) if w.mode == WorkerMode.SERVICES else None
        # {"image": ..., "args": [...]} in docker mode (secret values masked), else None
        answer["docker"] = masked_docker((w.options or {}).get("docker"), hidden)
        answer["pool"] = pool_json(w.pool) if w.mode != WorkerMode.STATIC and w.state != WorkerState.DEAD else None
        answer["drained"] = {
            gpu_label(d.gpu): d.reason for d in drains if d.host == w.host and overlap([d.gpu], w.gpus) is not None
        }
        out.append(answer)
    return out


@router.get("/workers")
def list_workers(manager: ManagerDep, all: bool = False) -> dict[str, Any]:
    return {"workers": workers_json(manager.store, manager.store.list_workers(include_dead=all), manager.secret_keys)}


@router.get("/workers/{worker_id}")
def get_worker(worker_id: WorkerId, manager: ManagerDep) -> dict[str, Any]:
    return workers_json(manager.store, [manager.store.get_worker(worker_id)], manager.secret_keys)[0]


def up_request(body: WorkersCreate) -> UpRequest:
    return UpRequest(
        queues=body.queues,
        gpus=body.gpus,
        cpu_only=body.cpu_only,
        order_fairness=body.order_fairness,
        create_queue=body.create_queue,
        uptime=body.uptime,
        downtime=body.downtime,
        services=body.services_mode,
        services_max=body.services_max,
        docker=body.docker,
        docker_args=body.docker_args,
        worker_name=body.worker_name,
        worker_id=body.worker_id,
    )


@router.post("/workers", status_code=201)
def create_workers(body: WorkersCreate, manager: ManagerDep) -> dict[str, Any]:
    workers, warnings = manager.add_workers(up_request(body), "api")
    for queue in check_queues(body.queues):
        manager.wake_queue(queue)
    return {"workers": workers_json(manager.store, workers, manager.secret_keys), "warnings": warnings}


@router.post("/workers/match")
def match_workers(body: WorkersCreate, manager: ManagerDep) -> dict[str, Any]:
    """The live worker that this ``up`` body started (``daemon ... --stop``); changes nothing."""
    return {"workers": workers_json(manager.store, manager.find_workers(up_request(body)), manager.secret_keys)}


@router.delete("/workers/{worker_id}", status_code=202)
def stop_worker(worker_id: WorkerId, manager: ManagerDep, drain: bool = False, requeue: bool = False) -> dict[str, Any]:
    workers = manager.stop_workers([worker_id], drain, requeue, "fleetctl stop")
    return workers_json(manager.store, [manager.store.get_worker(w.id) for w in workers], manager.secret_keys)[0]


@router.post("/workers/{worker_id}/stop", status_code=202)
def stop_worker_post(worker_id: WorkerId, body: StopBody, manager: ManagerDep) -> dict[str, Any]:
    return stop_worker(worker_id, manager, body.drain, body.requeue)


@router.get("/workers/{worker_id}/runtime-properties")
def get_runtime_properties(worker_id: WorkerId, manager: ManagerDep) -> dict[str, Any]:
    worker = manager.store.get_worker(worker_id)
    return {
        "worker": worker.id,
        "runtime_properties": workers_json(manager.store, [worker], manager.secret_keys)[0]["runtime_properties"],
    }


@router.put("/workers/{worker_id}/runtime-properties/{key}")
def set_runtime_property(
    worker_id: WorkerId, key: PropertyKey, body: RuntimePropertyBody, manager: ManagerDep
) -> dict[str, Any]:
    """Set a runtime property; ``force`` (``on``/``off``) overrides the worker's schedule until ``expiry`` seconds."""
    set_property(manager, worker_id, key, body.value, body.expiry, "api")
    return get_runtime_properties(worker_id, manager)


@router.delete("/workers/{worker_id}/runtime-properties/{key}")
def delete_runtime_property(worker_id: WorkerId, key: PropertyKey, manager: ManagerDep) -> dict[str, Any]:
    manager.store.get_worker(worker_id)
    if not manager.store.delete_runtime_property(worker_id, key, "api"):
        raise NotFound(f"worker {worker_id} has no runtime property {key!r}", field="key")
    manager.schedule_changed()
    return get_runtime_properties(worker_id, manager)


def set_property(manager: Manager, worker_id: str, key: str, value: str, expiry: float | None, actor: str) -> None:
    """The one way a runtime property is set (REST and the ClearML-compatible call)."""
    if key == "force" and value not in ("on", "off"):
        raise UsageError(f"runtime property force: expected 'on' or 'off', got {value!r}", field="value")
    manager.store.get_worker(worker_id)
    expires_at = time.time() + expiry if expiry else None
    manager.store.set_runtime_property(worker_id, key, value, expires_at, actor)
    manager.schedule_changed()
