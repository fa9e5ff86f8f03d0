"""The SQLite schema, versioned with ``PRAGMA user_version``.

Each migration moves the schema forward by one version inside one
transaction.  A database whose version is newer than this code knows is
refused, never touched.  Later issues append migrations; they never edit old
ones.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils


def _v1(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.table("queues").create({"id": str, "name": str, "tags": str, "created_at": float}, pk="id")
    db.table("queues").create_index(["name"], unique=True)
    db.table("tasks").create(
        {
            "id": str,
            "name": str,
            "status": str,
            "status_reason": str,
            "queue": str,
            "priority": int,
            "seq": float,
            "script": str,
            "env": str,
            "user": str,
            "requirements": str,
            "docker": str,
            "attempt": int,
            "retries": int,
            "timeout": float,
            "gpus_needed": int,
            "worker": str,
            "host": str,
            "gpus": str,
            "exit_code": int,
            "created_at": float,
            "queued_at": float,
            "started_at": float,
            "finished_at": float,
            "pid": int,
            "pid_start": float,
            "abort_requested": str,
            "env_cached": int,
            "parent": str,
        },
        pk="id",
        not_null={"name", "status", "priority", "script", "created_at", "attempt", "retries"},
        defaults={"status_reason": "", "attempt": 0, "retries": 0, "env_cached": 0},
    )
    db.table("tasks").create_index(["queue", "status", "priority", "seq"])
    db.table("tasks").create_index(["status", "worker"])
    db.table("tasks").create_index(["created_at"])
    db.table("task_attempts").create(
        {
            "task_id": str,
            "attempt": int,
            "worker": str,
            "host": str,
            "gpus": str,
            "started_at": float,
            "finished_at": float,
            "status": str,
            "exit_code": int,
            "reason": str,
        },
        pk=("task_id", "attempt"),
    )
    db.table("workers").create(
        {
            "id": str,
            "host": str,
            "mode": str,
            "gpus": str,
            "queues": str,
            "order_fairness": int,
            "state": str,
            "state_reason": str,
            "created_at": float,
            "pid": int,
            "pid_start": float,
            "last_seen": float,
            "stop_request": str,
            "restarts": int,
        },
        pk="id",
        defaults={"state_reason": "", "restarts": 0, "order_fairness": 0},
    )
    db.table("events").create(
        {
            "id": int,
            "at": float,
            "kind": str,
            "subject": str,
            "old": str,
            "new": str,
            "actor": str,
            "reason": str,
        },
        pk="id",
    )
    db.table("events").create_index(["kind", "subject"])


def _v2(db: sqlite_utils.Database) -> None:
    """Working hours: a worker's schedule, its effective state, runtime properties."""
    db.execute("ALTER TABLE workers ADD COLUMN schedule TEXT")
    db.execute("ALTER TABLE workers ADD COLUMN effective TEXT")
    db.table("runtime_properties").create(
        {"worker": str, "key": str, "value": str, "expires_at": float, "set_at": float},
        pk=("worker", "key"),
    )


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2]
LATEST = len(MIGRATIONS)
