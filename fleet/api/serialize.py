"""The JSON shapes of tasks, workers, queues, GPUs and events (API answers and
``--json``): the one place each record's wire shape is written.

Times are ISO 8601 in UTC; secrets are masked as :mod:`fleet.core.secrets` says
(environment values by name and by value, with the configured extra names in
``hidden``; ``docker run`` arguments; credentials in URLs: the repository,
index URLs in requirements); the diff and the setup script are not sent,
only whether there is one.  GPUs are written as :func:`fleet.core.gpuspec.gpu_json` writes a
unit: the index of a whole GPU, ``"0:3"`` for a MIG slice; ``gpu_uuids`` are
NVML's UUIDs of the attempt's GPUs (empty without NVML).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from fleet.core.gpuspec import gpu_json, gpu_label
from fleet.core.hosts import HostRow
from fleet.core.models import (
    DockerMode,
    Event,
    GpuDrain,
    Queue,
    RuntimeProperty,
    Task,
    TaskAttempt,
    TaskRequirements,
    WorkerMode,
    WorkerState,
)
from fleet.core.secrets import mask_args, mask_env, mask_urls
from fleet.policy.allocate import PoolState
from fleet.policy.pool_rules import services_max, worker_specs
from fleet.service.gpus import GpuView
from fleet.service.tasks import TaskPage
from fleet.service.workers import WorkerView


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def masked_docker(docker: DockerMode | None, hidden: Iterable[str]) -> dict[str, Any]:
    """The task's image and ``docker run`` arguments, secret values masked (``{}``: none)."""
    if docker is None:
        return {}
    return {"image": docker.image, "args": mask_args(list(docker.args), hidden)}


def task_json(task: Task, attempts: list[TaskAttempt] | None = None, *, hidden: Iterable[str] = ()) -> dict[str, Any]:
    """``hidden``: names to mask besides the built-in rules (``extra_keys``)."""
    script = task.script
    out: dict[str, Any] = {
        "id": task.id,
        "name": task.name,
        "queue": task.queue,
        "status": task.status.value,
        "status_reason": task.status_reason,
        "priority": task.priority,
        "worker": task.worker,
        "host": task.host,
        "gpus": [gpu_json(g) for g in task.gpus],
        "gpu_uuids": list(task.gpu_uuids),
        "gpus_needed": task.gpus_needed,
        "exit_code": task.exit_code,
        "attempt": task.attempt,
        "retries": task.retries,
        "timeout": task.timeout,
        "user": task.user,
        "created_at": iso(task.created_at),
        "queued_at": iso(task.queued_at),
        "started_at": iso(task.started_at),
        "finished_at": iso(task.finished_at),
        "script": {
            "command": list(script.command),
            "working_dir": script.working_dir,
            "repo": mask_urls(script.repo) if script.repo else script.repo,
            "branch": script.branch,
            "commit": script.commit,
            "diff": bool(script.diff),
            "entry_point": script.entry_point,
            "repo_dir": script.repo_dir,
            "setup_script": bool(script.setup_script),
        },
        "requirements": _masked_requirements(task.requirements),
        "docker": masked_docker(task.docker, hidden),
        "env": mask_env(task.env, hidden),
        "env_cached": task.env_cached,
        "abort_requested": bool(task.abort_requested),
        "parent": task.parent,
        "array_id": task.array_id,
        "array_index": task.array_index,
    }
    if attempts is not None:
        out["attempts"] = [
            {
                "attempt": a.attempt,
                "worker": a.worker,
                "host": a.host,
                "gpus": [gpu_json(g) for g in a.gpus],
                "gpu_uuids": list(a.gpu_uuids),
                "status": a.status.value,
                "exit_code": a.exit_code,
                "reason": a.reason,
                "started_at": iso(a.started_at),
                "finished_at": iso(a.finished_at),
            }
            for a in attempts
        ]
    return out


def task_page_json(page: TaskPage, *, hidden: Iterable[str] = ()) -> dict[str, Any]:
    """``GET /tasks``: the page's task summaries and where the rest starts."""
    return {
        "tasks": [task_summary_json(t, hidden=hidden) for t in page.tasks],
        "total": page.total,
        "limit": page.limit,
        "offset": page.offset,
        "truncated": page.truncated,
        "next_offset": page.next_offset,
    }


def task_summary_json(task: Task, *, hidden: Iterable[str] = ()) -> dict[str, Any]:
    """A task in a list answer (from a summary row, ``Store.list_tasks(summary=True)``):
    the same keys as :func:`task_json`, with ``env`` giving each name with a
    null value and ``requirements.file`` only ``true`` when there is one;
    the full values are in GET one."""
    out = task_json(task, hidden=hidden)
    out["env"] = dict.fromkeys(task.env)
    if "file" in out["requirements"]:
        out["requirements"]["file"] = True
    return out


def _masked_requirements(requirements: TaskRequirements) -> dict[str, Any]:
    masked = dataclasses.replace(
        requirements, file=mask_urls(requirements.file), packages=tuple(mask_urls(p) for p in requirements.packages)
    )
    return masked.to_json()


def worker_json(view: WorkerView, hidden: Iterable[str] = ()) -> dict[str, Any]:
    """A worker with its running tasks, runtime properties, drained GPUs, and
    (dynamic and services workers) its pool's last decision."""
    worker = view.worker
    effective = worker.effective
    when = effective.next_change if effective is not None else None
    schedule = worker.schedule
    return {
        "id": worker.id,
        "host": worker.host,
        "gpus": [gpu_json(g) for g in worker.gpus or []],
        "cpu_only": worker.gpus is None,
        "queues": list(worker.queues),
        "order_fairness": worker.order_fairness,
        "mode": worker.mode.value,
        "state": worker.state.value,
        "state_reason": worker.state_reason,
        "tasks": list(view.tasks),
        "schedule": {"kind": schedule.kind, "specs": list(schedule.specs)} if schedule is not None else None,
        "active": effective.active if effective is not None else True,
        "paused_queues": dict(effective.paused_queues) if effective is not None else {},
        "next_change": when.isoformat(timespec="seconds") if when is not None else None,
        "runtime_properties": properties_json(view.properties),
        "pid": worker.pid,
        "last_seen": iso(worker.last_seen),
        "created_at": iso(worker.created_at),
        "restarts": worker.restarts,
        "queue_specs": [spec.text() for spec in worker_specs(worker)],
        "services_max": services_max(worker) if worker.mode == WorkerMode.SERVICES else None,
        # {"image": ..., "args": [...]} in docker mode (secret values masked), else None
        "docker": docker_mode_json(worker.options.docker, hidden),
        "pool": pool_json(worker.pool)
        if worker.mode != WorkerMode.STATIC and worker.state != WorkerState.DEAD
        else None,
        "drained": dict(view.drained),
    }


def properties_json(properties: Mapping[str, RuntimeProperty]) -> dict[str, Any]:
    return {key: {"value": p.value, "expires_at": iso(p.expires_at)} for key, p in properties.items()}


def pool_json(pool: PoolState | None) -> dict[str, Any] | None:
    """A pool's last decision (``Worker.pool``) with its GPUs written as labels."""
    return pool.as_json(gpu_json, gpu_label) if pool is not None else None


def docker_mode_json(docker: DockerMode | None, hidden: Iterable[str]) -> dict[str, Any] | None:
    """A worker's docker mode: ``{"image": ..., "args": [...]}`` (args only when given, secret values masked)."""
    if docker is None:
        return None
    out: dict[str, Any] = {"image": docker.image}
    if docker.args:
        out["args"] = mask_args(list(docker.args), hidden)
    return out


def _unit_json(host: str, unit: int) -> dict[str, Any]:
    return {"host": host, "gpu": gpu_json(unit), "name": f"{host}:{gpu_label(unit)}"}


def gpu_view_json(view: GpuView) -> dict[str, Any]:
    return {
        **_unit_json(view.host, view.unit),
        "parent": view.parent,
        "uuid": view.uuid,
        "drained": drain_json(view.drained) if view.drained is not None else None,
    }


def drain_json(drain: GpuDrain) -> dict[str, Any]:
    return {
        **_unit_json(drain.host, drain.gpu),
        "reason": drain.reason,
        "source": drain.source,
        "at": iso(drain.at),
        "actor": drain.actor,
    }


def queue_json(queue: Queue) -> dict[str, Any]:
    return {
        "id": queue.id,
        "name": queue.name,
        "tags": list(queue.tags),
        "pending": queue.pending,
        "running": queue.running,
        "created_at": iso(queue.created_at),
    }


def event_json(event: Event) -> dict[str, Any]:
    return {
        "at": iso(event.at),
        "kind": event.kind,
        "subject": event.subject,
        "from": event.old,
        "to": event.new,
        "actor": event.actor,
        "reason": event.reason,
    }


def host_json(host: HostRow) -> dict[str, Any]:
    """A host of the fleet with its lease: ``lease_age_s`` is the store's clock minus
    its last renewal (``expired``: past ``lease_seconds`` and not declared lost yet)."""
    return {
        "name": host.name,
        "state": host.state.value,
        "gpus": [gpu_json(g) for g in host.gpus],
        "version": host.version,
        "api_url": host.api_url,
        "started_at": iso(host.started_at),
        "renewed_at": iso(host.renewed_at),
        "lease_seconds": host.lease_seconds,
        "lease_age_s": round(host.lease_age, 3),
        "expired": host.expired,
        "lost_at": iso(host.lost_at),
        "lost_by": host.lost_by,
    }
