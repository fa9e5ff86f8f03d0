"""The JSON shapes of tasks, workers and queues (API answers and ``--json``).

Times are ISO 8601 in UTC; environment values whose names look like secrets
are masked; the diff itself is not sent, only whether there is one.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fleet.models import Event, Queue, Task, Worker
from fleet.validate import mask_env


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def task_json(task: Task, attempts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
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
        "gpus": list(task.gpus),
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
            "repo": script.repo,
            "branch": script.branch,
            "commit": script.commit,
            "diff": bool(script.diff),
            "entry_point": script.entry_point,
        },
        "requirements": task.requirements,
        "docker": task.docker,
        "env": mask_env(task.env),
        "env_cached": task.env_cached,
        "abort_requested": bool(task.abort_requested),
        "parent": task.parent,
    }
    if attempts is not None:
        out["attempts"] = [
            {
                "attempt": a["attempt"],
                "worker": a["worker"],
                "host": a["host"],
                "gpus": a["gpus"],
                "status": a["status"],
                "exit_code": a["exit_code"],
                "reason": a["reason"] or "",
                "started_at": iso(a["started_at"]),
                "finished_at": iso(a["finished_at"]),
            }
            for a in attempts
        ]
    return out


def worker_json(worker: Worker, running: list[str]) -> dict[str, Any]:
    return {
        "id": worker.id,
        "host": worker.host,
        "gpus": worker.gpus if worker.gpus is not None else [],
        "cpu_only": worker.gpus is None,
        "queues": list(worker.queues),
        "order_fairness": worker.order_fairness,
        "mode": worker.mode.value,
        "state": worker.state.value,
        "state_reason": worker.state_reason,
        "tasks": running,
        "schedule": None,
        "runtime_properties": {},
        "pid": worker.pid,
        "last_seen": iso(worker.last_seen),
        "created_at": iso(worker.created_at),
        "restarts": worker.restarts,
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
