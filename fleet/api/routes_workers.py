"""Workers: list, get, create (= ``up``), delete (= ``stop``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fleet.api.deps import ManagerDep, WorkerId
from fleet.api.schemas import StopBody, WorkersCreate
from fleet.api.serialize import worker_json
from fleet.models import TaskStatus, Worker
from fleet.scheduler.claims import UpRequest
from fleet.store import Store

router = APIRouter(tags=["workers"])


def _running(store: Store) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for task in store.list_tasks(status=[TaskStatus.IN_PROGRESS], limit=100_000)[0]:
        if task.worker:
            out.setdefault(task.worker, []).append(task.id)
    return out


def _json(store: Store, workers: list[Worker]) -> list[dict[str, Any]]:
    running = _running(store)
    return [worker_json(w, running.get(w.id, [])) for w in workers]


@router.get("/workers")
def list_workers(manager: ManagerDep, all: bool = False) -> dict[str, Any]:
    return {"workers": _json(manager.store, manager.store.list_workers(include_dead=all))}


@router.get("/workers/{worker_id}")
def get_worker(worker_id: WorkerId, manager: ManagerDep) -> dict[str, Any]:
    return _json(manager.store, [manager.store.get_worker(worker_id)])[0]


@router.post("/workers", status_code=201)
def create_workers(body: WorkersCreate, manager: ManagerDep) -> dict[str, Any]:
    request = UpRequest(
        queues=body.queues,
        gpus=body.gpus,
        cpu_only=body.cpu_only,
        order_fairness=body.order_fairness,
        create_queue=body.create_queue,
    )
    workers, warnings = manager.add_workers(request, "api")
    for queue in body.queues:
        manager.wake_queue(queue)
    return {"workers": _json(manager.store, workers), "warnings": warnings}


@router.delete("/workers/{worker_id}", status_code=202)
def stop_worker(worker_id: WorkerId, manager: ManagerDep, drain: bool = False, requeue: bool = False) -> dict[str, Any]:
    workers = manager.stop_workers([worker_id], drain, requeue, "fleetctl stop")
    return _json(manager.store, [manager.store.get_worker(w.id) for w in workers])[0]


@router.post("/workers/{worker_id}/stop", status_code=202)
def stop_worker_post(worker_id: WorkerId, body: StopBody, manager: ManagerDep) -> dict[str, Any]:
    return stop_worker(worker_id, manager, body.drain, body.requeue)
