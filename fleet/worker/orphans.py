"""Ending a running task whose runner is gone.

Whoever finds a runner dead ends its task: the manager for a static worker,
a pool or a services worker (:mod:`fleet.manager.supervise`), a pool for its
per-task worker (:mod:`fleet.worker.gpupool`), the manager's lease sweep for a
remote executor (:mod:`fleet.manager.leases`).  Every process of the attempt is
killed first, found from the home, the task and the attempt alone
(:mod:`fleet.core.contain`), and the task is recorded ``failed`` only once none is
left, so its GPUs are never handed on while a process of it lives.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

from fleet.core.contain import Attempt
from fleet.core.errors import FleetError, StoreUnavailable
from fleet.core.models import Task, TaskStatus
from fleet.core.procs import is_same_process, signal_group
from fleet.store import Store

log = logging.getLogger(__name__)


def kill_orphaned(home: Path, task: Task, wait: float | None = None) -> bool:
    """SIGKILL every process of a running task whose worker is gone (its
    process group if the recorded leader is still the same process, its
    attempt's cgroup and marked processes) and wait until none is left; False
    when some remain after the wait."""
    if task.pid and is_same_process(task.pid, task.pid_start, task.pid_boot):
        signal_group(task.pid, signal.SIGKILL)
    attempt = Attempt(home, task.id, task.attempt)
    return attempt.end() if wait is None else attempt.end(wait)


def fail_orphaned(home: Path, store: Store, task: Task, reason: str, actor: str) -> bool:
    """End a running task whose worker is gone: kill all of it
    (:func:`kill_orphaned`), then record it ``failed`` with ``reason``, queued
    again when it has retries left.  False, recording nothing, while a process
    of it remains: the caller tries again later and hands its GPUs to no one
    meanwhile."""
    if not kill_orphaned(home, task):
        log.error("%s: task %s: processes left after SIGKILL; trying again", actor, task.id)
        return False
    record_orphaned(store, task, reason, actor)
    return True


def record_orphaned(store: Store, task: Task, reason: str, actor: str) -> None:
    """Record a running task whose runner is gone ``failed`` with ``reason``,
    queued again when it has retries left (no process of it runs here)."""
    requeue = "tail" if task.attempt <= task.retries else None
    try:
        store.finish_task(task.id, TaskStatus.FAILED, exit_code=None, reason=reason, actor=actor, requeue=requeue)
    except StoreUnavailable:
        raise  # the caller tries again later
    except FleetError as exc:
        log.error("%s: task %s of a dead worker: %s", actor, task.id, exc)
