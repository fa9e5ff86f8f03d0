"""Arrays (sweeps): create many tasks in one call, an array's counts, its abort."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Path

from fleet.api.deps import ServiceDep, WhoDep
from fleet.api.routes_tasks import task_spec
from fleet.api.schemas import AbortBody, TaskBatch
from fleet.api.serialize import iso
from fleet.core.models import TaskArray, TaskSpec

router = APIRouter(tags=["arrays"])

ArrayId = Annotated[str, Path(pattern=r"^a-[0-9a-f]{16}$", description="an array id: a- and 16 hex characters")]


@router.post("/tasks/batch", status_code=201)
def create_batch(body: TaskBatch, service: ServiceDep, who: WhoDep) -> dict[str, Any]:
    """Every task of ``tasks`` (each as ``POST /tasks`` takes it, plus ``array_index``)
    in one transaction, all or none, with one wake-up; with ``array`` they form one
    array capped at ``array.max_running`` running at once.  ``script`` is the code
    given once for every task without its own.  Answers ``{"array": ID|null, "tasks": [ids]}``."""
    specs: list[tuple[TaskSpec, str | None]] = []
    for item in body.tasks:
        if item.script is None and body.script is not None:
            item = item.model_copy(update={"script": body.script})
        specs.append((dataclasses.replace(task_spec(item), array_index=item.array_index), item.queue))
    cap = body.array.max_running if body.array is not None else None
    batch = service.arrays.submit(specs, cap, body.array is not None, who)
    return {"array": batch.array, "tasks": batch.tasks}


@router.get("/arrays/{array_id}")
def get_array(array_id: ArrayId, service: ServiceDep) -> dict[str, Any]:
    return array_json(service.arrays.get(array_id))


@router.post("/arrays/{array_id}/abort")
def abort_array(array_id: ArrayId, service: ServiceDep, who: WhoDep, body: AbortBody | None = None) -> dict[str, Any]:
    """Every queued task of the array stopped, every running one flagged (its worker
    stops it), in one transaction.  Answers the array and how many of each."""
    changed = service.arrays.abort(array_id, body.reason if body else "", who)
    out = array_json(service.arrays.get(array_id))
    out["stopped"] = sum(1 for t in changed if t.status.value == "stopped")
    out["abort_requested"] = sum(1 for t in changed if t.status.value == "in_progress")
    return out


def array_json(array: TaskArray) -> dict[str, Any]:
    counts = {s: array.counts.get(s, 0) for s in ("completed", "failed", "stopped", "in_progress", "queued", "created")}
    return {
        "id": array.id,
        "max_running": array.max_running,
        "created_at": iso(array.created_at),
        "user": array.user,
        "queue": array.queue,
        "size": array.size,
        "counts": counts,
        "ended": counts["completed"] + counts["failed"] + counts["stopped"] == array.size,
    }
