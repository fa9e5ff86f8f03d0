"""Rows of the SQLite store as fleet's records, and back: JSON columns,
and the worker columns that may be changed outside a state transition."""

from __future__ import annotations

import json
import math
from typing import Any

from fleet.models import Runner, Script, Task, TaskStatus, Worker, WorkerMode, WorkerState

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


# What a summary row holds in place of a large text it leaves out.
SUMMARY_MARK = "…"
_SUMMARY_EXPR = {
    # diff and setup script: the mark when there is one (the answer says only whether)
    "script": (
        "json_set(script,"
        " '$.diff', CASE WHEN coalesce(json_extract(script, '$.diff'), '') <> '' THEN '{m}' END,"
        " '$.setup_script', CASE WHEN coalesce(json_extract(script, '$.setup_script'), '') <> '' THEN '{m}' END)"
    ),
    # env: the names, each with an empty value
    "env": "(SELECT json_group_object(key, '') FROM json_each(tasks.env))",
    # requirements: the file's text replaced by the mark
    "requirements": (
        "CASE WHEN json_type(requirements, '$.file') = 'text'"
        " THEN json_set(requirements, '$.file', '{m}') ELSE requirements END"
    ),
}


def summary_columns(columns: list[str]) -> str:
    """The select list of a task summary: every column, the large ones summarized."""
    return ", ".join(
        f"{_SUMMARY_EXPR[c].format(m=SUMMARY_MARK)} AS {c}" if c in _SUMMARY_EXPR else f'"{c}"' for c in columns
    )


def row_size(row: Any) -> int:
    """About how many bytes a row's texts take (what a list answer grows by)."""
    return sum(len(v) for v in row if isinstance(v, (str, bytes)))


# 0001-01-02 .. 9999-12-30 UTC: what ``datetime.fromtimestamp`` takes on every platform
TIMESTAMP_MIN, TIMESTAMP_MAX = -62135510400.0, 253402128000.0


def usable_timestamp(value: Any) -> bool:
    """Whether a stored time (epoch seconds) is a number Python can turn into a date."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and TIMESTAMP_MIN <= value <= TIMESTAMP_MAX
    )


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
        gpu_uuids=loads(row["gpu_uuids"], []),
        owner=row["owner"],
        runner=Runner(row["runner"]) if row["runner"] else None,
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
