"""The remote executor API: HTTP for :mod:`fleet.service.remote`.

``fleet/remote_executor.py`` (the entry point of images built by ``fleetctl
build --docker``) posts ``start``, then ``log`` (output, at least every few
seconds: it renews the task's lease), then ``finish``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fleet.api.deps import BackendDep, ServiceDep, TaskId
from fleet.api.schemas import RemoteFinishBody, RemoteLogBody, RemoteStartBody
from fleet.api.serialize import task_json
from fleet.service.remote import RemoteEnd

router = APIRouter(tags=["remote executor"])


@router.post("/tasks/{task_id}/start")
def start(task_id: TaskId, body: RemoteStartBody, backend: BackendDep) -> dict[str, Any]:
    """Start the task (``clone``: a new clone of it) on a remote executor."""
    service = backend.service
    started = service.remote.start(task_id, body.worker, list(body.gpus), body.clone)
    return {
        "task": task_json(started, hidden=service.tasks.hidden),
        "attempt": started.attempt,
        "timeout": started.timeout,
        "stop_grace_seconds": backend.config.fleet.stop_grace_seconds,
    }


@router.post("/tasks/{task_id}/log")
def append_log(task_id: TaskId, body: RemoteLogBody, service: ServiceDep) -> dict[str, Any]:
    """Append output (empty: a heartbeat); renews the lease; answers the abort asked, if any."""
    return {"abort": service.remote.log(task_id, body.attempt, body.text)}


@router.post("/tasks/{task_id}/finish")
def finish(task_id: TaskId, body: RemoteFinishBody, service: ServiceDep) -> dict[str, Any]:
    """Record the attempt's end (a failure with retries left goes back to its queue)."""
    end = RemoteEnd(body.attempt, body.exit_code, body.stopped, body.timed_out, body.reason)
    return task_json(service.remote.finish(task_id, end), hidden=service.tasks.hidden)
