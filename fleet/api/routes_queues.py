"""Queues: list, create, get, update tags, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fleet.api.deps import ManagerDep, QueueRef
from fleet.api.schemas import QueueCreate, QueueUpdate
from fleet.api.serialize import queue_json

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
    name = manager.store.get_queue(queue).name
    manager.store.delete_queue(queue, "api", force=force)
    return {"deleted": name}
