"""The remote executor API: a task run elsewhere reports here.

``fleet/worker/remote.py`` (the entry point of images built by ``fleetctl
build --docker``) runs a task's command wherever the image runs and reports
through these routes: ``start`` moves the task (or a clone of it) to
in_progress under the executor's worker id, ``log`` appends output and
renews the task's lease (answering whether an abort was asked), ``finish``
records the attempt's end with a worker's verdict.  A task whose executor
falls silent for ``fleet.remote_lease_seconds`` is failed by the manager
(:mod:`fleet.leases`).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from fastapi import APIRouter

from fleet.api.deps import ManagerDep, TaskId
from fleet.api.schemas import RemoteFinishBody, RemoteLogBody, RemoteStartBody
from fleet.api.serialize import task_json
from fleet.clone import clone_spec
from fleet.errors import Conflict
from fleet.manager import Manager
from fleet.models import Runner, Task, TaskStatus, Worker, WorkerMode, WorkerState
from fleet.scheduler.pool import id_taken
from fleet.worker.logfile import TaskLog, strip_stamp
from fleet.worker.process import Outcome, StopCause

router = APIRouter(tags=["remote executor"])

ACTOR = "api"
TAIL_BYTES = 8192

# One start at a time: the check that the worker id is not one of ours, the
# clone and the start go together.
_starting = threading.Lock()


def _executor(body: RemoteStartBody) -> Worker:
    host = body.worker.split(":", 1)[0]
    return Worker(
        id=body.worker,
        host=host,
        mode=WorkerMode.STATIC,
        gpus=list(body.gpus),
        queues=[],
        order_fairness=False,
        state=WorkerState.BUSY,
        state_reason="remote executor",
        created_at=time.time(),
    )


def _max_log(manager: Manager) -> int:
    return int(manager.config.fleet.log_max_mb * 2**20)


def _task_log(manager: Manager, task: Task) -> TaskLog:
    return manager.leases.log(task.id, manager.home.task_log(task.id), _max_log(manager))


@router.post("/tasks/{task_id}/start")
def start(task_id: TaskId, body: RemoteStartBody, manager: ManagerDep) -> dict[str, Any]:
    """Start the task (``clone``: a new clone of it) on a remote executor."""
    store = manager.store
    worker = _executor(body)
    with _starting:
        task = store.get_task(task_id)
        if task.status == TaskStatus.IN_PROGRESS and not body.clone:
            raise Conflict(f"task {task.id} is running on {task.worker}; start a clone of it instead", field="task")
        registered = store.list_workers()
        taken = next((w for w in registered if id_taken(w, worker.id, worker.host, task.id, body.gpus)), None)
        if taken is not None:
            raise Conflict(
                f"worker id {worker.id!r} belongs to worker {taken.id} of this manager; pick another", field="worker"
            )
        if body.clone:
            task = store.create_task(clone_spec(task), None, ACTOR)
        started = store.start_task(task.id, worker, list(body.gpus), ACTOR, Runner.REMOTE)
        manager.leases.grant(started.id, started.attempt, worker.id)
    with manager.leases.hold(started.id):
        gpus = ",".join(map(str, started.gpus)) or "none"
        clone = f", clone of {started.parent}" if body.clone else ""
        _task_log(manager, started).note(
            f"attempt {started.attempt} on remote executor {worker.id} (GPUs {gpus}{clone})"
        )
    return {
        "task": task_json(started, hidden=manager.secret_keys),
        "attempt": started.attempt,
        "timeout": started.timeout,
        "stop_grace_seconds": manager.config.fleet.stop_grace_seconds,
    }


def _running(manager: Manager, task_id: str, attempt: int) -> Task:
    """The task, in progress with ``attempt`` on a remote executor; else a 409."""
    task = manager.store.get_task(task_id)
    if task.status != TaskStatus.IN_PROGRESS or task.attempt != attempt:
        state = task.status.value if task.status != TaskStatus.IN_PROGRESS else f"at attempt {task.attempt}"
        raise Conflict(f"task {task.id} is {state}; attempt {attempt} is not running", field="attempt")
    if not manager.leases.remote(task):
        raise Conflict(f"task {task.id} is run by worker {task.worker}, not by a remote executor", field="task")
    return task


@router.post("/tasks/{task_id}/log")
def append_log(task_id: TaskId, body: RemoteLogBody, manager: ManagerDep) -> dict[str, Any]:
    """Append output (empty: a heartbeat); renews the lease; answers the abort asked, if any."""
    task = manager.store.get_task(task_id)
    broken = None
    with manager.leases.hold(task.id):
        task = _running(manager, task.id, body.attempt)
        if body.text:
            task_log = _task_log(manager, task)
            task_log.feed(body.text.encode("utf-8", "replace"))
            task_log.flush_partial()
            broken = task_log.error  # "log cannot be written: ...": the executor stops it, as a worker does
        manager.leases.renew(task.id, task.attempt, task.worker)
    return {"abort": task.abort_requested or broken}


def _tail(manager: Manager, task: Task) -> list[str]:
    """The log's last lines (for a failure's reason)."""
    try:
        with open(manager.home.task_log(task.id), "rb") as fh:
            fh.seek(0, os.SEEK_END)
            start = max(0, fh.tell() - TAIL_BYTES)
            fh.seek(start)
            lines = fh.read().decode("utf-8", "replace").splitlines()[1 if start else 0 :]
    except OSError:
        return []
    return [strip_stamp(line) for line in lines if " [fleet] " not in line][-10:]


def verdict(task: Task, body: RemoteFinishBody, tail: list[str]) -> tuple[TaskStatus, str, str]:
    """(status, reason, description) of an attempt's end, as a worker decides them."""
    if body.timed_out:
        cause: StopCause | None = StopCause.TIMEOUT
        detail = "timeout"
    elif body.stopped:
        cause = StopCause.ABORT
        detail = task.abort_requested or body.reason or "stopped by the remote executor"
    else:
        cause, detail = None, body.reason
    outcome = Outcome(body.exit_code, cause, detail)
    if body.exit_code is None and cause is None:
        reason = body.reason or "the remote executor could not run the command"
        return TaskStatus.FAILED, reason, reason
    status, reason = outcome.verdict(tail)
    return status, reason, outcome.description


@router.post("/tasks/{task_id}/finish")
def finish(task_id: TaskId, body: RemoteFinishBody, manager: ManagerDep) -> dict[str, Any]:
    """Record the attempt's end (a failure with retries left goes back to its queue)."""
    store = manager.store
    task = store.get_task(task_id)
    with manager.leases.hold(task.id):
        task = _running(manager, task.id, body.attempt)
        task_log = _task_log(manager, task)
        task_log.flush_partial()
        status, reason, description = verdict(task, body, _tail(manager, task))
        task_log.note(f"attempt {task.attempt} ended: {status.value} ({description})")
        manager.leases.drop(task.id)
        requeue = "tail" if status == TaskStatus.FAILED and task.attempt <= task.retries else None
        store.finish_task(
            task.id, status, exit_code=body.exit_code, reason=reason, actor=f"worker:{task.worker}", requeue=requeue
        )
    ended = store.get_task(task.id)
    if ended.status == TaskStatus.QUEUED and ended.queue is not None:
        manager.wake_queue(ended.queue)
    return task_json(ended, hidden=manager.secret_keys)
