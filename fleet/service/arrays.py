"""Array operations: many tasks made in one call (a sweep, ``fleetctl submit
--array/--grid``), an array's counts and its abort.

A batch is all or nothing: every spec is checked with the rules of a single
submit (:meth:`fleet.service.tasks.Tasks.submit`) before anything is
written, then every task is created in one store transaction and the
queues' workers are woken once.  Each task of an array gets
``FLEET_ARRAY_ID`` and ``FLEET_ARRAY_INDEX`` in its environment (an index
the caller set itself is kept).  Array ids are ``a-`` and 16 hex
characters, never confused with a task id (hex only).
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass

from fleet.core.errors import Forbidden
from fleet.core.models import ArraySpec, Task, TaskArray, TaskSpec, TaskStatus
from fleet.policy.pool_rules import refuse_oversized
from fleet.service.tasks import TaskPage, Tasks
from fleet.service.who import Who
from fleet.worker.runas import refuse_unrunnable

ARRAY_PREFIX = "a-"
MAX_BATCH = 10_000  # tasks in one batch (the API's bound)


@dataclass(frozen=True)
class Batch:
    """What a batch made: its array (None: tasks without an array) and task ids in order."""

    array: str | None
    tasks: list[str]


def new_array_id() -> str:
    return ARRAY_PREFIX + uuid.uuid4().hex[:16]


class Arrays:
    def __init__(self, tasks: Tasks) -> None:
        self.tasks = tasks
        self.store = tasks.store
        self.wake = tasks.wake

    def submit(self, specs: list[tuple[TaskSpec, str | None]], max_running: int | None, array: bool, by: Who) -> Batch:
        """Create every ``(spec, queue)`` as ``by`` in one transaction; with ``array``
        they form one array capped at ``max_running`` running at once (None: no cap)."""
        workers = None
        checked: set[tuple[str, int]] = set()
        array_spec = ArraySpec(new_array_id(), max_running) if array else None
        ready: list[tuple[TaskSpec, str | None]] = []
        for position, (spec, queue) in enumerate(specs):
            if spec.user and spec.user != by.user:
                raise Forbidden(
                    f"tasks[{position}].user {spec.user!r}: a task's user is who submits it ({by.user})",
                    field=f"tasks[{position}].user",
                )
            if spec.gpus and queue is not None and (queue, spec.gpus) not in checked:
                workers = self.store.list_workers() if workers is None else workers
                refuse_oversized(workers, queue, spec.gpus)
                checked.add((queue, spec.gpus))
            spec = dataclasses.replace(spec, user=by.user)
            refuse_unrunnable(self.tasks.config, spec)
            if array_spec is not None:
                index = spec.array_index if spec.array_index is not None else position
                env = {"FLEET_ARRAY_ID": array_spec.id, "FLEET_ARRAY_INDEX": str(index), **spec.env}
                spec = dataclasses.replace(spec, env=env, array_index=position)
            ready.append((spec, queue))
        ids = self.store.create_tasks(ready, array_spec, by.actor)
        self.wake.queues({q for _, q in ready if q is not None})
        return Batch(array_spec.id if array_spec else None, ids)

    def get(self, array_id: str) -> TaskArray:
        return self.store.get_array(array_id)

    def page(
        self, array_id: str, *, statuses: list[TaskStatus] | None, limit: int, offset: int, max_bytes: int
    ) -> TaskPage:
        """The array's tasks in index order, a page of them (as :meth:`Tasks.page`)."""
        everything = self.store.array_tasks(array_id, statuses)
        tasks: list[Task] = []
        size = 0
        for task in everything[offset : offset + limit]:
            size += len(task.name) + len(" ".join(task.script.command))
            if tasks and size > max_bytes:
                break
            tasks.append(task)
        total = len(everything)
        truncated = len(tasks) < min(limit, max(total - offset, 0))
        return TaskPage(tasks, total, limit, offset, truncated, offset + len(tasks) if truncated else None)

    def abort(self, array_id: str, reason: str, by: Who) -> list[Task]:
        """Every queued task of the array stopped and every running one flagged, in
        one transaction; the workers running them are woken."""
        found = self.store.get_array(array_id)
        if not by.admin and found.user != by.user:
            raise Forbidden(f"array {array_id} was submitted by {found.user or 'another user'}, not {by.user}")
        changed = self.store.abort_array(array_id, by.actor, reason or "aborted")
        self.wake.tasks(changed)
        return changed
