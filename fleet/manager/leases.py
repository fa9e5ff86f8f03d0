"""Leases of remotely executed tasks (the remote executor API).

A task run by ``fleet/remote_executor.py`` (in a container built by ``fleetctl
build --docker``) has no pid here and no registered worker: nothing would
notice if its runner vanished.  So starting it gives it a lease of
``fleet.remote_lease_seconds``, renewed by every ``log`` post (the runner
posts at least every few seconds).  The manager's loop calls :meth:`sweep`;
a task whose lease ran out while it is still in progress with the same
attempt ends ``failed`` (``remote executor <worker> lost: no word for Ns``),
queued again when it has retries left.

Leases live in memory: a new manager seeds a full one for every in-progress
task whose runner is a remote executor (see :meth:`seed`).  On a store shared
by many hosts, only for the ones it started itself: an executor posts to the
manager it started from, so another host's manager would hear nothing from
it and fail a task that runs well.  The task's start event names the manager
that started it (:func:`starter`, in the reason of its move to in_progress).

Every change of a leased task's state (log, finish, sweep) happens under the
task's own lock (:meth:`hold`), so a late ``finish`` and the sweep never both
end the same attempt.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fleet.core.errors import FleetError, StoreUnavailable
from fleet.core.models import Runner, Task, TaskStatus
from fleet.core.tasklog import TaskLog
from fleet.store import Store
from fleet.worker.orphans import record_orphaned

log = logging.getLogger(__name__)

ACTOR = "manager"


def starter(host: str) -> str:
    """The actor of a remote task's start event: the API of the manager on ``host``."""
    return f"api@{host}"


TASK_LOCKS = 64


@dataclass(frozen=True)
class Lease:
    attempt: int
    worker: str
    deadline: float  # time.monotonic()


class Leases:
    """``{task id: Lease}``, shared by the API threads and the manager loop."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._task_locks = [threading.Lock() for _ in range(TASK_LOCKS)]
        self._logs: dict[str, TaskLog] = {}

    @contextmanager
    def hold(self, task_id: str) -> Iterator[None]:
        """The task's lock: one change of its state (and one log writer) at a time.
        Striped: a fixed set of locks, so nothing grows with the number of tasks."""
        with self._task_locks[zlib.crc32(task_id.encode()) % TASK_LOCKS]:
            yield

    def grant(self, task_id: str, attempt: int, worker: str, now: float | None = None) -> None:
        """A full lease (on start, and on every word from the runner)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._leases[task_id] = Lease(attempt, worker, now + self.seconds)

    def renew(self, task_id: str, attempt: int, worker: str | None, now: float | None = None) -> None:
        with self._lock:
            current = self._leases.get(task_id)
        name = worker or (current.worker if current is not None else "?")
        self.grant(task_id, attempt, name, now)

    def log(self, task_id: str, path: Path, max_bytes: int) -> TaskLog:
        """The task's log, open while it is leased (one writer: call under :meth:`hold`)."""
        with self._lock:
            task_log = self._logs.get(task_id)
            if task_log is None:
                task_log = self._logs[task_id] = TaskLog(path, max_bytes)
            return task_log

    def drop(self, task_id: str) -> None:
        """No lease any more; its log is closed."""
        with self._lock:
            self._leases.pop(task_id, None)
            task_log = self._logs.pop(task_id, None)
        if task_log is not None:
            try:
                task_log.close()
            except OSError as exc:
                log.error("manager: log of task %s: %s", task_id, exc)

    def get(self, task_id: str) -> Lease | None:
        with self._lock:
            return self._leases.get(task_id)

    def remote(self, task: Task) -> bool:
        """True when ``task`` (in progress) is run by a remote executor: leased,
        or its attempt's runner is one."""
        return self.get(task.id) is not None or task.runner == Runner.REMOTE

    def seed(self, store: Store, now: float | None = None, *, host: str | None = None) -> list[str]:
        """At manager start: a full lease for every in-progress task run by a
        remote executor (started before a restart); with ``host`` (a store many
        hosts share) only for those this host's manager started.  Returns their ids."""
        seeded = []
        for task in store.running_tasks(runner=Runner.REMOTE):
            if host is not None and _started_by(store, task) != starter(host):
                continue
            self.grant(task.id, task.attempt, task.worker or "?", now)
            seeded.append(task.id)
        if seeded:
            log.info("manager: %d remotely executed task(s) in progress; waiting for word from them", len(seeded))
        return seeded

    def sweep(self, store: Store, now: float | None = None) -> list[str]:
        """Fail the tasks whose lease ran out; returns their ids."""
        now = time.monotonic() if now is None else now
        with self._lock:
            expired = [(tid, lease) for tid, lease in self._leases.items() if lease.deadline <= now]
        failed = []
        for task_id, lease in expired:
            with self.hold(task_id):
                if self.get(task_id) != lease:  # renewed or dropped meanwhile
                    continue
                if self._expire(store, task_id, lease):
                    failed.append(task_id)
                self.drop(task_id)  # not reached when the store is unavailable: the next sweep tries again
        return failed

    def _expire(self, store: Store, task_id: str, lease: Lease) -> bool:
        """Fail a task whose lease ran out, if it is still the remote executor's."""
        try:
            task = store.get_task(task_id)
        except StoreUnavailable:
            raise
        except FleetError as exc:  # gone from the store: nothing to end
            log.error("manager: lease of task %s: %s", task_id, exc)
            return False
        if task.status != TaskStatus.IN_PROGRESS or task.attempt != lease.attempt:
            return False
        if task.runner != Runner.REMOTE:
            return False  # a worker runs it now: not ours to end
        reason = f"remote executor {lease.worker} lost: no word for {self.seconds:g}s"
        log.warning("manager: task %s: %s", task_id, reason)
        record_orphaned(store, task, reason, ACTOR)  # its runner is remote: nothing runs here
        return True


def _started_by(store: Store, task: Task) -> str | None:
    """Who started the task's running attempt (its latest move to in_progress says: ``Store.start_task``)."""
    moves = [e for e in store.events(kind="task", subject=task.id, limit=50) if e.new == TaskStatus.IN_PROGRESS.value]
    return moves[-1].reason.removeprefix("started by ") if moves else None
