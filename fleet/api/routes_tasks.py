"""Tasks: list, create, get, enqueue, dequeue, abort, clone, log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from fleet.api.bounds import MAX_LIST_BYTES, ListLimit, Offset
from fleet.api.deps import HostFilter, ServiceDep, TaskId, WhoDep
from fleet.api.schemas import AbortBody, CloneBody, EnqueueBody, TaskCreate
from fleet.api.serialize import event_json, task_json, task_page_json
from fleet.core.errors import UsageError
from fleet.core.models import DockerMode, Script, TaskRequirements, TaskSpec, TaskStatus
from fleet.service.tasks import CloneEdits

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
    service: ServiceDep,
    queue: str | None = None,
    status: Annotated[str | None, Query(max_length=1000, description="comma-separated statuses")] = None,
    worker: str | None = None,
    array: Annotated[str | None, Query(pattern=r"^a-[0-9a-f]{16}$", description="only this array's tasks")] = None,
    host: HostFilter = None,
    limit: ListLimit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Task summaries, newest first: every key of a task, with ``env`` values,
    the requirements file and the setup script left out (GET one has them).

    At most ``limit`` rows and about ``MAX_LIST_BYTES`` bytes: when rows were
    left out for size, ``truncated`` is true and ``next_offset`` continues.
    A ``queue`` that does not exist and that no task names is a 404, and so is a
    ``host`` no worker was ever registered on (its message names the known hosts).
    With ``array`` the array's tasks in index order (the other filters but
    ``status`` do not apply)."""
    tasks = service.tasks
    statuses = _statuses(status)
    if array is not None:
        page = service.arrays.page(array, statuses=statuses, limit=limit, offset=offset, max_bytes=MAX_LIST_BYTES)
        return task_page_json(page, hidden=tasks.hidden)
    page = tasks.page(
        queue=queue, statuses=statuses, worker=worker, host=host, limit=limit, offset=offset, max_bytes=MAX_LIST_BYTES
    )
    return task_page_json(page, hidden=tasks.hidden)


@router.post("/tasks", status_code=201)
def create_task(body: TaskCreate, service: ServiceDep, who: WhoDep) -> dict[str, Any]:
    """The task's ``user`` is the caller; a ``user`` in the body naming anyone
    else is refused (403, field ``user``)."""
    task = service.tasks.submit(task_spec(body), body.queue, who)
    return task_json(task, hidden=service.tasks.hidden)


def task_spec(body: TaskCreate) -> TaskSpec:
    return TaskSpec(
        script=_script(body),
        requirements=TaskRequirements.from_json(body.requirements.to_json())
        if body.requirements
        else TaskRequirements(),
        docker=DockerMode(body.docker.image, tuple(body.docker.args)) if body.docker is not None else None,
        name=body.name,
        env=body.env,
        priority=body.priority,
        timeout=body.timeout,
        retries=body.retries,
        gpus=body.gpus,
        user=body.user,
    )


def _script(body: TaskCreate) -> Script:
    script = Script(command=body.command, working_dir=body.working_dir, setup_script=body.setup_script)
    git = body.script
    if git is None:
        return script
    script.repo, script.branch, script.commit, script.diff = git.repo, git.branch, git.commit, git.diff or None
    script.entry_point, script.repo_dir = git.entry_point, git.repo_dir
    return script


@router.get("/tasks/{task_id}")
def get_task(task_id: TaskId, service: ServiceDep) -> dict[str, Any]:
    task = service.tasks.get(task_id)
    return task_json(task, service.tasks.attempts(task), hidden=service.tasks.hidden)


@router.get("/tasks/{task_id}/events")
def task_events(task_id: TaskId, service: ServiceDep) -> dict[str, Any]:
    return {"events": [event_json(e) for e in service.tasks.events(task_id)]}


@router.post("/tasks/{task_id}/enqueue")
def enqueue(task_id: TaskId, body: EnqueueBody, service: ServiceDep, who: WhoDep) -> dict[str, Any]:
    return task_json(service.tasks.enqueue(task_id, body.queue, body.head, who), hidden=service.tasks.hidden)


@router.post("/tasks/{task_id}/dequeue")
def dequeue(task_id: TaskId, service: ServiceDep, who: WhoDep) -> dict[str, Any]:
    return task_json(service.tasks.dequeue(task_id, who), hidden=service.tasks.hidden)


@router.post("/tasks/{task_id}/abort")
def abort(task_id: TaskId, service: ServiceDep, who: WhoDep, body: AbortBody | None = None) -> dict[str, Any]:
    task = service.tasks.abort(task_id, body.reason if body else "", who)
    return task_json(task, hidden=service.tasks.hidden)


@router.post("/tasks/{task_id}/clone", status_code=201)
def clone(task_id: TaskId, service: ServiceDep, who: WhoDep, body: CloneBody | None = None) -> dict[str, Any]:
    """A new task with the same code and settings; ``command`` and ``env`` may be
    edited (a value still masked as the API shows it keeps the original's real value).
    The clone is the caller's: it runs as them, not as the original's user."""
    edits = CloneEdits() if body is None else CloneEdits(body.queue, body.name, body.command, body.env)
    return task_json(service.tasks.clone(task_id, edits, who), hidden=service.tasks.hidden)


@router.get("/tasks/{task_id}/log", response_class=Response)
async def task_log(
    task_id: TaskId,
    service: ServiceDep,
    offset: Offset = 0,
    follow: bool = False,
) -> Response:
    """The task's log from byte ``offset``, wherever the task ran
    (:mod:`fleet.service.tasklogs`); ``follow`` streams until the task ends.

    Without ``follow`` the answer carries ``X-Next-Offset`` to continue from."""
    tasks, logs = service.tasks, service.logs
    task = await asyncio.to_thread(tasks.get, task_id)
    # a log that cannot be read is answered before any byte is sent
    data = await asyncio.to_thread(logs.read, task, offset, LOG_CHUNK)
    if not follow:
        return Response(
            data,
            media_type="text/plain; charset=utf-8",
            headers={"X-Next-Offset": str(offset + len(data)), "X-Task-Status": task.status.value},
        )

    async def stream(first: bytes) -> AsyncIterator[bytes]:
        position = offset + len(first)
        current = task
        if first:
            yield first
        while True:
            data = await asyncio.to_thread(logs.read, current, position, LOG_CHUNK)
            if data:
                position += len(data)
                yield data
                continue
            current = await asyncio.to_thread(tasks.get, task.id)
            if current.status.ended or current.status == TaskStatus.CREATED:
                tail = await asyncio.to_thread(logs.read, current, position, LOG_CHUNK)
                if tail:
                    position += len(tail)
                    yield tail
                    continue
                return
            await asyncio.sleep(FOLLOW_POLL_S)

    return StreamingResponse(stream(data), media_type="text/plain; charset=utf-8")
