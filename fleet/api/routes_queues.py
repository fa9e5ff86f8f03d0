"""Queues: list, create, get, update tags, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fleet.api.deps import QueueRef, ServiceDep
from fleet.api.schemas import QueueCreate, QueueUpdate
from fleet.api.serialize import queue_json

router = APIRouter(tags=["queues"])


@router.get("/queues")
def list_queues(service: ServiceDep) -> dict[str, Any]:
    return {"queues": [queue_json(q) for q in service.queues.all()]}


@router.post("/queues", status_code=201)
def create_queue(body: QueueCreate, service: ServiceDep) -> dict[str, Any]:
    return queue_json(service.queues.create(body.name, body.tags, "api"))


@router.get("/queues/{queue}")
def get_queue(queue: QueueRef, service: ServiceDep) -> dict[str, Any]:
    return queue_json(service.queues.get(queue))


@router.patch("/queues/{queue}")
def update_queue(queue: QueueRef, body: QueueUpdate, service: ServiceDep) -> dict[str, Any]:
    return queue_json(service.queues.set_tags(queue, body.tags, "api"))


@router.delete("/queues/{queue}")
def delete_queue(queue: QueueRef, service: ServiceDep, force: bool = False) -> dict[str, Any]:
    """Refused (409) while a live worker pulls from the queue, naming the
    workers, unless ``force``: the workers would poll a queue that is gone."""
    return {"deleted": service.queues.delete(queue, force, "api")}
