"""Workers: list, get, create (= ``up``), delete (= ``stop``), runtime properties."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from fleet.api.deps import HostFilter, ServiceDep, WorkerId
from fleet.api.schemas import RuntimePropertyBody, StopBody, WorkersCreate
from fleet.api.serialize import properties_json, worker_json
from fleet.policy.upplan import UpRequest
from fleet.service.operations import Service
from fleet.service.workers import WorkerView

router = APIRouter(tags=["workers"])
PropertyKey = Annotated[str, Path(pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")]


def _json(service: Service, views: list[WorkerView]) -> list[dict[str, Any]]:
    return [worker_json(view, service.tasks.hidden) for view in views]


@router.get("/workers")
def list_workers(service: ServiceDep, all: bool = False, host: HostFilter = None) -> dict[str, Any]:
    """Every host's workers (one store, many hosts), or one ``host``'s."""
    return {"workers": _json(service, service.workers.all(include_dead=all, host=host))}


@router.get("/workers/{worker_id}")
def get_worker(worker_id: WorkerId, service: ServiceDep) -> dict[str, Any]:
    return worker_json(service.workers.get(worker_id), service.tasks.hidden)


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
def create_workers(body: WorkersCreate, service: ServiceDep) -> dict[str, Any]:
    workers, warnings = service.workers.add(up_request(body), "api")
    return {"workers": _json(service, service.workers.views(workers)), "warnings": warnings}


@router.post("/workers/match")
def match_workers(body: WorkersCreate, service: ServiceDep) -> dict[str, Any]:
    """The live worker that this ``up`` body started (``daemon ... --stop``); changes nothing."""
    return {"workers": _json(service, service.workers.views(service.workers.find(up_request(body))))}


@router.delete("/workers/{worker_id}", status_code=202)
def stop_worker(worker_id: WorkerId, service: ServiceDep, drain: bool = False, requeue: bool = False) -> dict[str, Any]:
    (worker,) = service.workers.stop([worker_id], drain, requeue, "fleetctl stop")
    return worker_json(service.workers.get(worker.id), service.tasks.hidden)


@router.post("/workers/{worker_id}/stop", status_code=202)
def stop_worker_post(worker_id: WorkerId, body: StopBody, service: ServiceDep) -> dict[str, Any]:
    return stop_worker(worker_id, service, body.drain, body.requeue)


@router.get("/workers/{worker_id}/runtime-properties")
def get_runtime_properties(worker_id: WorkerId, service: ServiceDep) -> dict[str, Any]:
    worker, properties = service.workers.properties(worker_id)
    return {"worker": worker.id, "runtime_properties": properties_json(properties)}


@router.put("/workers/{worker_id}/runtime-properties/{key}")
def set_runtime_property(
    worker_id: WorkerId, key: PropertyKey, body: RuntimePropertyBody, service: ServiceDep
) -> dict[str, Any]:
    """Set a runtime property; ``force`` (``on``/``off``) overrides the worker's schedule until ``expiry`` seconds."""
    service.workers.set_property(worker_id, key, body.value, body.expiry, "api")
    return get_runtime_properties(worker_id, service)


@router.delete("/workers/{worker_id}/runtime-properties/{key}")
def delete_runtime_property(worker_id: WorkerId, key: PropertyKey, service: ServiceDep) -> dict[str, Any]:
    service.workers.clear_property(worker_id, key, "api")
    return get_runtime_properties(worker_id, service)
