"""Queues: list, create, get, update tags, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fleet.api.deps import ManagerDep, QueueRef
from fleet.api.schemas import QueueCreate, QueueUpdate
from fleet.api.serialize import queue_json
from fleet.errors import Conflict
from fleet.models import WorkerState

router = APIRouter(tags=["queues"])


@router.get("/queues")
def list_queues(manager: ManagerDep) -> dict[str, Any]:
    return {"queues": [queue_json(q) for q in manager.store.list_queues()]}


@router.post("/queues", status_code=201)
def create_queue(body: QueueCreate, manager: ManagerDep) -> dict[str, Any]:
    return queue_json(manager.store.create_queue(body.name, body.tags, "api"))


@router.get("/queues/{queue}")
def get_queue(queue: QueueRef, manager: ManagerDep) -> dict[str, Any]:
    return queue_json(manager.store.get_queue(queue))


@router.patch("/queues/{queue}")
def update_queue(queue: QueueRef, body: QueueUpdate, manager: ManagerDep) -> dict[str, Any]:
    updated = manager.store.set_queue_tags(queue, body.tags, "api")
    manager.schedule_changed()
    manager.wake_queue(updated.name)
    return queue_json(updated)


@router.delete("/queues/{queue}")
def delete_queue(queue: QueueRef, manager: ManagerDep, force: bool = False) -> dict[str, Any]:
    """Refused (409) while a live worker pulls from the queue, naming the
    workers, unless ``force``: the workers would poll a queue that is gone."""
    name = manager.store.get_queue(queue).name
    serving = [w.id for w in manager.store.list_workers() if w.state != WorkerState.DEAD and name in w.queues]
    if serving and not force:
        raise Conflict(
            f"queue {name!r} is served by live worker(s) {', '.join(sorted(serving))}; "
            "stop them first or delete with --force (API: force=true)",
            field="queue",
        )
    manager.store.delete_queue(queue, "api", force=force)
    return {"deleted": name}
