"""Containers left behind: found by their labels and removed.

Every container fleet starts carries ``fleet.task``, ``fleet.worker``,
``fleet.host``, ``fleet.core.home`` (its ``FLEET_HOME``) and ``fleet.runner_pid``
(the runner process that owns it).  A container of this host and this home
is an orphan when its runner is gone (the worker or runner crashed, or was
SIGKILLed before it could remove it) or when its task is no longer
``in_progress``.  Containers of another home on the same engine (another
user's fleet, another manager) are left to that home's workers: this store
does not know their tasks.  A container without the home label (made by an
older fleet) is an orphan only when its runner is gone.  The sweep runs when a docker runner
starts, before it creates its own container, and when a docker-mode worker
starts, so a worker restarted after a crash cleans up at once.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from fleet.core.errors import FleetError
from fleet.core.models import TaskStatus
from fleet.store import Store
from fleet.worker.docker.args import LABEL_HOME, LABEL_HOST, LABEL_PID, LABEL_TASK

log = logging.getLogger(__name__)


def _pid_alive(text: str) -> bool:
    try:
        pid = int(text)
    except ValueError:
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _task_running(store: Store | None, task_id: str) -> bool:
    if store is None:
        return True
    try:
        return store.get_task(task_id).status == TaskStatus.IN_PROGRESS
    except FleetError:
        return False


def sweep(host: str, home: str, store: Store | None) -> list[str]:
    """Connect to the engine and :func:`remove_orphans`; an unreachable engine is
    logged, never raised (a worker starting up must not fail on it)."""
    try:
        import docker

        client = docker.from_env()
        try:
            return remove_orphans(client, host, home, store)
        finally:
            client.close()
    except Exception as exc:  # DockerException, connection errors
        log.warning("docker: cannot sweep orphan containers: %s", exc)
        return []


def remove_orphans(client: Any, host: str, home: str, store: Store | None = None, keep: str = "") -> list[str]:
    """Remove this host's and this home's fleet containers whose runner is dead or whose
    task has ended; return their names.  ``keep`` names a container never touched."""
    removed: list[str] = []
    for container in client.containers.list(all=True, filters={"label": f"{LABEL_HOST}={host}"}):
        labels = container.labels or {}
        if container.name == keep:
            continue
        owner = labels.get(LABEL_HOME, "")
        if owner and owner != home:
            continue
        alive = _pid_alive(labels.get(LABEL_PID, ""))
        if alive and (not owner or _task_running(store, labels.get(LABEL_TASK, ""))):
            continue
        try:
            container.remove(force=True)
        except Exception as exc:  # a sweep must not stop the task that runs it
            log.warning("could not remove orphan container %s: %s", container.name, exc)
            continue
        removed.append(container.name)
    return removed
