"""Tasks: list, create, get, enqueue, dequeue, abort, clone, log."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from fleet.api.auth import Caller
from fleet.api.bounds import MAX_LIST_BYTES, ListLimit, Offset
from fleet.api.deps import CallerDep, ManagerDep, TaskId
from fleet.api.routes_workers import workers_json
from fleet.api.schemas import AbortBody, CloneBody, EnqueueBody, TaskCreate
from fleet.api.serialize import event_json, task_json, task_summary_json
from fleet.clone import clone_spec
from fleet.errors import Conflict, Forbidden, StoreError, UsageError
from fleet.models import Script, Task, TaskSpec, TaskStatus
from fleet.scheduler.pool import refuse_oversized
from fleet.validate import queue_name, worker_id
from fleet.worker.runas import refuse_unrunnable

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
    status: Annotated[str | None, Query(max_length=1000, description="comma-separated statuses")] = None,
    worker: str | None = None,
    limit: ListLimit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Task summaries, newest first: every key of a task, with ``env`` values,
    the requirements file and the setup script left out (GET one has them).

    At most ``limit`` rows and about ``MAX_LIST_BYTES`` bytes: when rows were
    left out for size, ``truncated`` is true and ``next_offset`` continues.
    A ``queue`` that does not exist and that no task names is a 404."""
    if queue is not None:
        queue_name(queue)
    if worker is not None:
        worker_id(worker)
    tasks, total = manager.store.list_tasks(
        queue=queue,
        status=_statuses(status),
        worker=worker,
        limit=limit,
        offset=offset,
        summary=True,
        max_bytes=MAX_LIST_BYTES,
    )
    if queue is not None and total == 0:  # a queue nobody knows (a typo) is an error, not an empty list
        manager.store.get_queue(queue)
    truncated = len(tasks) < min(limit, max(total - offset, 0))
    return {
        "tasks": [task_summary_json(t, hidden=manager.secret_keys) for t in tasks],
        "total": total,
        "limit": limit,
        "offset": offset,
        "truncated": truncated,
        "next_offset": offset + len(tasks) if truncated else None,
    }


def _may_change(caller: Caller, task: Task) -> None:
    """Only a task's submitter, the manager's user and root change a task."""
    if not caller.admin and task.user != caller.user:
        raise Forbidden(f"task {task.id} was submitted by {task.user or 'another user'}, not {caller.user}")


@router.post("/tasks", status_code=201)
def create_task(body: TaskCreate, manager: ManagerDep, caller: CallerDep) -> dict[str, Any]:
    """The task's ``user`` is the caller; a ``user`` in the body naming anyone
    else is refused (403, field ``user``)."""
    if body.user and body.user != caller.user:
        raise Forbidden(
            f"user {body.user!r}: a task's user is who submits it ({caller.user}); leave the field out", field="user"
        )
    if body.gpus and body.queue is not None:  # a count no pool serving the queue can ever give
        refuse_oversized(
            workers_json(manager.store, manager.store.list_workers(), manager.secret_keys), body.queue, body.gpus
        )
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
        user=caller.user,
    )
    refuse_unrunnable(manager.config, spec)
    task = manager.store.create_task(spec, body.queue, f"api:{caller.user}")
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
def enqueue(task_id: TaskId, body: EnqueueBody, manager: ManagerDep, caller: CallerDep) -> dict[str, Any]:
    _may_change(caller, manager.store.get_task(task_id))
    task = manager.store.enqueue_task(task_id, body.queue, f"api:{caller.user}", head=body.head)
    manager.wake_queue(body.queue)
    return task_json(task, hidden=manager.secret_keys)


@router.post("/tasks/{task_id}/dequeue")
def dequeue(task_id: TaskId, manager: ManagerDep, caller: CallerDep) -> dict[str, Any]:
    _may_change(caller, manager.store.get_task(task_id))
    return task_json(manager.store.dequeue_task(task_id, f"api:{caller.user}"), hidden=manager.secret_keys)


@router.post("/tasks/{task_id}/abort")
def abort(task_id: TaskId, manager: ManagerDep, caller: CallerDep, body: AbortBody | None = None) -> dict[str, Any]:
    _may_change(caller, manager.store.get_task(task_id))
    reason = (body.reason if body else "") or "aborted"
    task = manager.store.request_abort(task_id, f"api:{caller.user}", reason)
    manager.wake_worker(task.worker)
    return task_json(task, hidden=manager.secret_keys)


@router.post("/tasks/{task_id}/clone", status_code=201)
def clone(task_id: TaskId, manager: ManagerDep, caller: CallerDep, body: CloneBody | None = None) -> dict[str, Any]:
    """A new task with the same code and settings; ``command`` and ``env`` may be
    edited (a value still masked as the API shows it keeps the original's real value).
    The clone is the caller's: it runs as them, not as the original's user."""
    body = body or CloneBody(queue=None, name=None, command=None, env=None)
    source = manager.store.get_task(task_id)
    spec = clone_spec(source, name=body.name, command=body.command, env=body.env, hidden=manager.secret_keys)
    spec = dataclasses.replace(spec, user=caller.user)
    refuse_unrunnable(manager.config, spec)
    task = manager.store.create_task(spec, body.queue, f"api:{caller.user}")
    if task.queue is not None:
        manager.wake_queue(task.queue)
    return task_json(task, hidden=manager.secret_keys)


@router.get("/tasks/{task_id}/log", response_class=Response)
async def task_log(
    task_id: TaskId,
    manager: ManagerDep,
    offset: Offset = 0,
    follow: bool = False,
) -> Response:
    """The task's log from byte ``offset``; ``follow`` streams until the task ends.

    Without ``follow`` the answer carries ``X-Next-Offset`` to continue from."""
    task = await asyncio.to_thread(manager.store.get_task, task_id)
    path = manager.home.task_log(task.id)
    data = _read(path, offset, LOG_CHUNK)  # a log that cannot be read is answered before any byte is sent
    if not follow:
        return Response(
            data,
            media_type="text/plain; charset=utf-8",
            headers={"X-Next-Offset": str(offset + len(data)), "X-Task-Status": task.status.value},
        )

    async def stream(first: bytes) -> AsyncIterator[bytes]:
        position = offset + len(first)
        if first:
            yield first
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

    return StreamingResponse(stream(data), media_type="text/plain; charset=utf-8")


def _read(path: os.PathLike[str], offset: int, size: int) -> bytes:
    """Up to ``size`` bytes of the log from ``offset``; none while there is no log yet.

    A log path that is a folder is a state the task's files are in (409);
    any other failure to read (permissions, I/O) is the disk's (503)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(size)
    except FileNotFoundError:
        return b""
    except IsADirectoryError:
        raise Conflict(f"cannot read the task's log: {os.fspath(path)} is a folder", field="log") from None
    except OSError as exc:
        raise StoreError(f"cannot read the task's log {os.fspath(path)}: {exc.strerror or exc}", field="log") from None
