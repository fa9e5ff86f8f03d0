"""The remote executor's operations: a task run elsewhere reports here.

``fleet/remote_executor.py`` (the entry point of images built by ``fleetctl
build --docker``) runs a task's command wherever the image runs and reports
through the API: :meth:`Remote.start` moves the task (or a clone of it) to
in_progress under the executor's worker id, :meth:`Remote.log` appends output
and renews the task's lease (answering whether an abort was asked),
:meth:`Remote.finish` records the attempt's end with the verdict a worker
would give (:mod:`fleet.core.outcome`).  A task whose executor falls silent for
``fleet.remote_lease_seconds`` is failed by the manager (:mod:`fleet.manager.leases`).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from fleet.core.config import Config
from fleet.core.errors import Conflict
from fleet.core.home import Home
from fleet.core.models import Runner, Task, TaskStatus, Worker, WorkerMode, WorkerState
from fleet.core.outcome import Outcome, StopCause
from fleet.core.tasklog import TaskLog, strip_stamp
from fleet.manager.leases import Leases, starter
from fleet.policy.pool_rules import id_taken
from fleet.service.tasks import AttemptEnd, Tasks
from fleet.store import Store

TAIL_BYTES = 8192


@dataclass(frozen=True)
class RemoteEnd:
    """How a remote attempt ended: ``stopped`` when the executor stopped the
    command (an abort, or its own SIGTERM), ``timed_out`` when the task's timeout did."""

    attempt: int
    exit_code: int | None
    stopped: bool
    timed_out: bool
    reason: str


def executor(worker_id: str, gpus: list[int]) -> Worker:
    """The worker a remote executor runs a task as (no row: it is not ours)."""
    return Worker(
        id=worker_id,
        host=worker_id.split(":", 1)[0],
        mode=WorkerMode.STATIC,
        gpus=list(gpus),
        queues=[],
        order_fairness=False,
        state=WorkerState.BUSY,
        state_reason="remote executor",
        created_at=time.time(),
    )


def verdict(task: Task, end: RemoteEnd, tail: list[str]) -> tuple[AttemptEnd, str]:
    """The attempt's end, as a worker decides it (the reason of a failure carries
    the log's tail), and how its process ended, for the log."""
    if end.timed_out:
        cause: StopCause | None = StopCause.TIMEOUT
        detail = "timeout"
    elif end.stopped:
        cause = StopCause.ABORT
        detail = task.abort_requested or end.reason or "stopped by the remote executor"
    else:
        cause, detail = None, end.reason
    if end.exit_code is None and cause is None:
        reason = end.reason or "the remote executor could not run the command"
        return AttemptEnd(TaskStatus.FAILED, None, reason), reason
    outcome = Outcome(end.exit_code, cause, detail)
    status, reason = outcome.verdict(tail)
    return AttemptEnd(status, end.exit_code, reason), outcome.description


class Remote:
    def __init__(self, tasks: Tasks, store: Store, leases: Leases, home: Home, config: Config, hostname: str) -> None:
        self.tasks = tasks
        self.actor = starter(hostname)  # the start event names this manager: its lease is this manager's
        self.store = store
        self.leases = leases
        self.home = home
        self.max_log = int(config.fleet.log_max_mb * 2**20)
        # One start at a time: the check that the worker id is not one of ours, the
        # clone and the start go together.
        self._starting = threading.Lock()

    def _log(self, task: Task) -> TaskLog:
        return self.leases.log(task.id, self.home.task_log(task.id), self.max_log)

    def start(self, task_id: str, worker_id: str, gpus: list[int], clone: bool) -> Task:
        """Start the task (``clone``: a new clone of it) on a remote executor."""
        worker = executor(worker_id, gpus)
        with self._starting:
            task = self.store.get_task(task_id)
            if task.status == TaskStatus.IN_PROGRESS and not clone:
                raise Conflict(f"task {task.id} is running on {task.worker}; start a clone of it instead", field="task")
            registered = self.store.list_workers()
            taken = next((w for w in registered if id_taken(w, worker.id, worker.host, task.id, gpus)), None)
            if taken is not None:
                raise Conflict(
                    f"worker id {worker.id!r} belongs to worker {taken.id} of this manager; pick another",
                    field="worker",
                )
            started = self.tasks.start_here(
                task.id, worker, list(gpus), clone=clone, actor=self.actor, runner=Runner.REMOTE
            )
            self.leases.grant(started.id, started.attempt, worker.id)
        with self.leases.hold(started.id):
            shown = ",".join(map(str, started.gpus)) or "none"
            cloned = f", clone of {started.parent}" if clone else ""
            self._log(started).note(f"attempt {started.attempt} on remote executor {worker.id} (GPUs {shown}{cloned})")
        return started

    def _running(self, task_id: str, attempt: int) -> Task:
        """The task, in progress with ``attempt`` on a remote executor; else a 409."""
        task = self.store.get_task(task_id)
        if task.status != TaskStatus.IN_PROGRESS or task.attempt != attempt:
            state = task.status.value if task.status != TaskStatus.IN_PROGRESS else f"at attempt {task.attempt}"
            raise Conflict(f"task {task.id} is {state}; attempt {attempt} is not running", field="attempt")
        if not self.leases.remote(task):
            raise Conflict(f"task {task.id} is run by worker {task.worker}, not by a remote executor", field="task")
        return task

    def log(self, task_id: str, attempt: int, text: str) -> str | None:
        """Append output (empty: a heartbeat); renews the lease; the abort asked, if any
        (or why the log cannot be written: the executor stops the task, as a worker does)."""
        task = self.store.get_task(task_id)
        broken = None
        with self.leases.hold(task.id):
            task = self._running(task.id, attempt)
            if text:
                task_log = self._log(task)
                task_log.feed(text.encode("utf-8", "replace"))
                task_log.flush_partial()
                broken = task_log.error
            self.leases.renew(task.id, task.attempt, task.worker)
        return task.abort_requested or broken

    def _tail(self, task: Task) -> list[str]:
        """The log's last lines (for a failure's reason)."""
        try:
            with open(self.home.task_log(task.id), "rb") as fh:
                fh.seek(0, os.SEEK_END)
                start = max(0, fh.tell() - TAIL_BYTES)
                fh.seek(start)
                lines = fh.read().decode("utf-8", "replace").splitlines()[1 if start else 0 :]
        except OSError:
            return []
        return [strip_stamp(line) for line in lines if " [fleet] " not in line][-10:]

    def finish(self, task_id: str, end: RemoteEnd) -> Task:
        """Record the attempt's end (a failure with retries left goes back to its queue)."""
        task = self.store.get_task(task_id)
        with self.leases.hold(task.id):
            task = self._running(task.id, end.attempt)
            task_log = self._log(task)
            task_log.flush_partial()
            ended, description = verdict(task, end, self._tail(task))
            task_log.note(f"attempt {task.attempt} ended: {ended.status.value} ({description})")
            self.leases.drop(task.id)
            return self.tasks.finish(task.id, ended, actor=f"worker:{task.worker}", retry=True)
