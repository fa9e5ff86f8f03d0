"""Tasks: list, create, get, enqueue, dequeue, abort, clone, log."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from fleet.api.deps import MAX_OFFSET, ManagerDep, TaskId
from fleet.api.routes_workers import workers_json
from fleet.api.schemas import AbortBody, CloneBody, EnqueueBody, TaskCreate
from fleet.api.serialize import event_json, task_json
from fleet.clone import clone_spec
from fleet.errors import UsageError
from fleet.models import Script, TaskSpec, TaskStatus
from fleet.scheduler.pool import refuse_oversized
from fleet.validate import queue_name, worker_id

router = APIRouter(tags=["tasks"])

LOG_CHUNK = 1024 * 1024
FOLLOW_POLL_S = 0.1


def _statuses(raw: str | None) -> list[TaskStatus] | None:
    if not raw:
        return None
    out = []
    for part in raw.split(","):
        try:
            out.append(TaskStatus(part.strip()))
        except ValueError:
            allowed = ", ".join(s.value for s in TaskStatus)
            raise UsageError(f"status {part.strip()!r}: expected one of {allowed}", field="status") from None
    return out


@router.get("/tasks")
def list_tasks(
    manager: ManagerDep,
    queue: str | None = None,
    status: Annotated[str | None, Query(description="comma-separated statuses")] = None,
    worker: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    if queue is not None:
        queue_name(queue)
    if worker is not None:
        worker_id(worker)
    tasks, total = manager.store.list_tasks(
        queue=queue, status=_statuses(status), worker=worker, limit=limit, offset=offset
    )
    return {
        "tasks": [task_json(t, hidden=manager.secret_keys) for t in tasks],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.post("/tasks", status_code=201)
def create_task(body: TaskCreate, manager: ManagerDep) -> dict[str, Any]:
    if body.gpus and body.queue is not None:  # a count no pool serving the queue can ever give
        refuse_oversized(workers_json(manager.store, manager.store.list_workers()), body.queue, body.gpus)
    spec = TaskSpec(
        script=_script(body),
        requirements=body.requirements.to_json() if body.requirements is not None else {},
        docker=body.docker.to_json() if body.docker is not None else {},
        name=body.name,
        env=body.env,
        priority=body.priority,
        timeout=body.timeout,
        retries=body.retries,
        gpus=body.gpus,
        user=body.user,
    )
    task = manager.store.create_task(spec, body.queue, f"api:{body.user or 'anonymous'}")
    if task.queue is not None:
        manager.wake_queue(task.queue)
    return task_json(task, hidden=manager.secret_keys)


def _script(body: TaskCreate) -> Script:
    script = Script(command=body.command, working_dir=body.working_dir, setup_script=body.setup_script)
    git = body.script
    if git is None:
        return script
    script.repo, script.branch, script.commit, script.diff = git.repo, git.branch, git.commit, git.diff or None
    script.entry_point, script.repo_dir = git.entry_point, git.repo_dir
    return script


@router.get("/tasks/{task_id}")
def get_task(task_id: TaskId, manager: ManagerDep) -> dict[str, Any]:
    task = manager.store.get_task(task_id)
    return task_json(task, manager.store.attempts(task.id), hidden=manager.secret_keys)


@router.get("/tasks/{task_id}/events")
def task_events(task_id: TaskId, manager: ManagerDep) -> dict[str, Any]:
    task = manager.store.get_task(task_id)
    return {"events": [event_json(e) for e in manager.store.events("task", task.id)]}


@router.post("/tasks/{task_id}/enqueue")
def enqueue(task_id: TaskId, body: EnqueueBody, manager: ManagerDep) -> dict[str, Any]:
    task = manager.store.enqueue_task(task_id, body.queue, "api", head=body.head)
    manager.wake_queue(body.queue)
    return task_json(task, hidden=manager.secret_keys)


@router.post("/tasks/{task_id}/dequeue")
def dequeue(task_id: TaskId, manager: ManagerDep) -> dict[str, Any]:
    return task_json(manager.store.dequeue_task(task_id, "api"), hidden=manager.secret_keys)


@router.post("/tasks/{task_id}/abort")
def abort(task_id: TaskId, manager: ManagerDep, body: AbortBody | None = None) -> dict[str, Any]:
    reason = (body.reason if body else "") or "aborted"
    task = manager.store.request_abort(task_id, "api", reason)
    manager.wake_worker(task.worker)
    return task_json(task, hidden=manager.secret_keys)


@router.post("/tasks/{task_id}/clone", status_code=201)
def clone(task_id: TaskId, manager: ManagerDep, body: CloneBody | None = None) -> dict[str, Any]:
    """A new task with the same code and settings; ``command`` and ``env`` may be
    edited (a value still masked as the API shows it keeps the original's real value)."""
    body = body or CloneBody(queue=None, name=None, command=None, env=None)
    source = manager.store.get_task(task_id)
    spec = clone_spec(source, name=body.name, command=body.command, env=body.env, hidden=manager.secret_keys)
    task = manager.store.create_task(spec, body.queue, "api")
    if task.queue is not None:
        manager.wake_queue(task.queue)
    return task_json(task, hidden=manager.secret_keys)


@router.get("/tasks/{task_id}/log", response_class=Response)
async def task_log(
    task_id: TaskId,
    manager: ManagerDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    follow: bool = False,
) -> Response:
    """The task's log from byte ``offset``; ``follow`` streams until the task ends.

    Without ``follow`` the answer carries ``X-Next-Offset`` to continue from."""
    task = await asyncio.to_thread(manager.store.get_task, task_id)
    path = manager.home.task_log(task.id)
    if not follow:
        data = _read(path, offset, LOG_CHUNK)
        return Response(
            data,
            media_type="text/plain; charset=utf-8",
            headers={"X-Next-Offset": str(offset + len(data)), "X-Task-Status": task.status.value},
        )

    async def stream() -> AsyncIterator[bytes]:
        position = offset
        while True:
            data = _read(path, position, LOG_CHUNK)
            if data:
                position += len(data)
                yield data
                continue
            current = await asyncio.to_thread(manager.store.get_task, task.id)
            if current.status.ended or current.status == TaskStatus.CREATED:
                tail = _read(path, position, LOG_CHUNK)
                if tail:
                    position += len(tail)
                    yield tail
                    continue
                return
            await asyncio.sleep(FOLLOW_POLL_S)

    return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")


def _read(path: os.PathLike[str], offset: int, size: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(size)
    except FileNotFoundError:
        return b""
