"""Task operations: submit, enqueue, dequeue, abort, clone, start outside a
queue (``fleetctl execute``, a remote executor) and record an attempt's end;
and the reads the API answers with.

Rules that live here and nowhere else: a task's ``user`` is its caller (a
body naming anyone else is refused, 403); only a task's submitter, the
manager's user and root change a task; a ``--gpus`` count that no worker
serving the queue can ever give is refused at submit
(:func:`fleet.policy.pool_rules.refuse_oversized`); a task that cannot run as its
submitter is refused at submit (:func:`fleet.worker.runas.refuse_unrunnable`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fleet.core.config import Config
from fleet.core.errors import Forbidden
from fleet.core.models import Event, ExitUsage, Runner, Task, TaskAttempt, TaskSpec, TaskStatus, Worker
from fleet.core.validate import queue_name, worker_id
from fleet.policy.pool_rules import refuse_oversized
from fleet.service.clone import clone_spec
from fleet.service.host_views import check_host
from fleet.service.wake import Wake
from fleet.service.who import Who
from fleet.store import Store
from fleet.worker.runas import refuse_unrunnable


@dataclass(frozen=True)
class CloneEdits:
    """What a clone changes: its queue (none: not queued), name, command, environment."""

    queue: str | None = None
    name: str | None = None
    command: list[str] | None = None
    env: dict[str, str] | None = None


@dataclass(frozen=True)
class TaskPage:
    """One page of a task list (summaries, newest first)."""

    tasks: list[Task]
    total: int
    limit: int
    offset: int
    truncated: bool  # rows were left out for size; ``next_offset`` goes on
    next_offset: int | None


@dataclass(frozen=True)
class AttemptEnd:
    """How an attempt ended, as its runner decided (:meth:`fleet.core.outcome.Outcome.verdict`)."""

    status: TaskStatus
    exit_code: int | None
    reason: str
    usage: ExitUsage | None = None


class Tasks:
    def __init__(self, store: Store, wake: Wake, config: Config) -> None:
        self.store = store
        self.wake = wake
        self.config = config
        self.hidden = frozenset(config.agent.hide_docker_command_env_vars.extra_keys)  # masked in answers

    # -- reads --------------------------------------------------------------------------
    def get(self, task_id: str) -> Task:
        return self.store.get_task(task_id)

    def attempts(self, task: Task) -> list[TaskAttempt]:
        return self.store.attempts(task.id)

    def events(self, task_id: str) -> list[Event]:
        return self.store.events("task", self.store.get_task(task_id).id)

    def page(
        self,
        *,
        queue: str | None,
        statuses: list[TaskStatus] | None,
        worker: str | None,
        limit: int,
        offset: int,
        max_bytes: int,
        host: str | None = None,
    ) -> TaskPage:
        """Task summaries; a ``queue`` that does not exist and that no task names is a 404.
        ``host``: the tasks that run or ran there (a queued task ran nowhere yet); an
        unknown host is a 404 naming the known ones."""
        if queue is not None:
            queue_name(queue)
        if worker is not None:
            worker_id(worker)
        host = check_host(self.store, host)
        tasks, total = self.store.list_tasks(
            queue=queue,
            status=statuses,
            worker=worker,
            host=host,
            limit=limit,
            offset=offset,
            summary=True,
            max_bytes=max_bytes,
        )
        if queue is not None and total == 0:  # a queue nobody knows (a typo) is an error, not an empty list
            self.store.get_queue(queue)
        truncated = len(tasks) < min(limit, max(total - offset, 0))
        return TaskPage(tasks, total, limit, offset, truncated, offset + len(tasks) if truncated else None)

    # -- changes ------------------------------------------------------------------------
    def submit(self, spec: TaskSpec, queue: str | None, by: Who) -> Task:
        """Create a task (queued when ``queue`` is given) as ``by``; ``spec.user``
        may only name the caller (empty: the caller)."""
        if spec.user and spec.user != by.user:
            raise Forbidden(
                f"user {spec.user!r}: a task's user is who submits it ({by.user}); leave the field out", field="user"
            )
        if spec.gpus and queue is not None:  # a count no pool serving the queue can ever give
            refuse_oversized(self.store.list_workers(), queue, spec.gpus)
        return self._create(dataclasses.replace(spec, user=by.user), queue, by.actor)

    def clone(self, task_id: str, edits: CloneEdits, by: Who) -> Task:
        """A new task with the same code and settings; ``command`` and ``env`` may be
        edited (a value still masked as the API shows it keeps the original's real
        value).  The clone is the caller's: it runs as them, not as the original's user."""
        source = self.store.get_task(task_id)
        spec = clone_spec(source, name=edits.name, command=edits.command, env=edits.env, hidden=self.hidden)
        return self._create(dataclasses.replace(spec, user=by.user), edits.queue, by.actor)

    def _create(self, spec: TaskSpec, queue: str | None, actor: str) -> Task:
        refuse_unrunnable(self.config, spec)
        task = self.store.create_task(spec, queue, actor)
        self.wake.queue(task.queue)
        return task

    def enqueue(self, task_id: str, queue: str, head: bool, by: Who) -> Task:
        self._may_change(by, self.store.get_task(task_id))
        task = self.store.enqueue_task(task_id, queue, by.actor, head=head)
        self.wake.queue(queue)
        return task

    def dequeue(self, task_id: str, by: Who) -> Task:
        self._may_change(by, self.store.get_task(task_id))
        return self.store.dequeue_task(task_id, by.actor)

    def abort(self, task_id: str, reason: str, by: Who) -> Task:
        """A queued task is stopped at once; a running one is flagged and its worker woken."""
        self._may_change(by, self.store.get_task(task_id))
        task = self.store.request_abort(task_id, by.actor, reason or "aborted")
        self.wake.tasks([task])
        return task

    @staticmethod
    def _may_change(by: Who, task: Task) -> None:
        """Only a task's submitter, the manager's user and root change a task."""
        if not by.admin and task.user != by.user:
            raise Forbidden(f"task {task.id} was submitted by {task.user or 'another user'}, not {by.user}")

    # -- runs outside a queue pull (fleetctl execute, a remote executor) ----------------------
    def start_here(
        self, task_id: str, worker: Worker, gpus: list[int], *, clone: bool, actor: str, runner: Runner
    ) -> Task:
        """Start the task (``clone``: a new clone of it, not queued) on ``worker``
        with ``gpus``, in one transaction (:meth:`fleet.store.Store.start_task`)."""
        task = self.store.get_task(task_id)
        if clone:
            task = self.store.create_task(clone_spec(task), None, actor)
        return self.store.start_task(task.id, worker, gpus, actor, runner)

    def finish(self, task_id: str, end: AttemptEnd, *, actor: str, retry: bool) -> Task:
        """Record the end of the running attempt; with ``retry`` a failure with
        retries left goes back to the tail of its queue, whose workers are woken."""
        task = self.store.get_task(task_id)
        requeue = "tail" if retry and end.status == TaskStatus.FAILED and task.attempt <= task.retries else None
        self.store.finish_task(
            task.id,
            end.status,
            exit_code=end.exit_code,
            reason=end.reason,
            actor=actor,
            requeue=requeue,
            usage=end.usage,
        )
        ended = self.store.get_task(task.id)
        if ended.status == TaskStatus.QUEUED or ended.array_id is not None:  # an array's cap may let the next run
            self.wake.queue(ended.queue)
        return ended
