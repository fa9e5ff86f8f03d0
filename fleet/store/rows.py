"""Rows of the SQLite store as fleet's records, and back: JSON columns,
and the worker columns that may be changed outside a state transition."""

from __future__ import annotations

import json
from typing import Any

from fleet.models import Script, Task, TaskStatus, Worker, WorkerMode, WorkerState

WORKER_FIELDS = {
    "pid",
    "pid_start",
    "pid_boot",
    "last_seen",
    "stop_request",
    "restarts",
    "queues",
    "order_fairness",
    "gpus",
    "schedule",
    "effective",
    "options",
    "pool",
}
JSON_WORKER_FIELDS = {"stop_request", "queues", "gpus", "schedule", "effective", "options", "pool"}


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def loads(text: str | None, default: Any) -> Any:
    return default if text is None or text == "" else json.loads(text)


def to_task(row: dict[str, Any]) -> Task:
    return Task(
        id=row["id"],
        name=row["name"],
        status=TaskStatus(row["status"]),
        status_reason=row["status_reason"] or "",
        queue=row["queue"],
        priority=row["priority"],
        script=Script.from_json(loads(row["script"], {})),
        env=loads(row["env"], {}),
        user=row["user"] or "",
        created_at=row["created_at"],
        attempt=row["attempt"],
        retries=row["retries"],
        timeout=row["timeout"],
        gpus_needed=row["gpus_needed"],
        worker=row["worker"],
        host=row["host"],
        gpus=loads(row["gpus"], []),
        exit_code=row["exit_code"],
        queued_at=row["queued_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        pid=row["pid"],
        pid_start=row["pid_start"],
        pid_boot=row["pid_boot"],
        abort_requested=row["abort_requested"],
        requirements=loads(row["requirements"], {}),
        docker=loads(row["docker"], {}),
        env_cached=bool(row["env_cached"]),
        parent=row["parent"],
    )


def to_worker(row: dict[str, Any]) -> Worker:
    return Worker(
        id=row["id"],
        host=row["host"],
        mode=WorkerMode(row["mode"]),
        gpus=loads(row["gpus"], None),
        queues=loads(row["queues"], []),
        order_fairness=bool(row["order_fairness"]),
        state=WorkerState(row["state"]),
        state_reason=row["state_reason"] or "",
        created_at=row["created_at"],
        pid=row["pid"],
        pid_start=row["pid_start"],
        pid_boot=row["pid_boot"],
        last_seen=row["last_seen"],
        stop_request=loads(row["stop_request"], None),
        restarts=row["restarts"] or 0,
        schedule=loads(row["schedule"], None),
        effective=loads(row["effective"], None),
        options=loads(row["options"], None),
        pool=loads(row["pool"], None),
    )
