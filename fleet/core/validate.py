"""Validation of the names that reach the filesystem and the store.

Task ids, queue names and worker ids are checked at every edge so that none of
them can walk out of ``FLEET_HOME`` or break a log path.
"""

from __future__ import annotations

import re

from fleet.core.errors import UsageError

TASK_ID_RE = re.compile(r"^[0-9a-f]{4,32}$")
QUEUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
WORKER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:,\-]{0,127}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def task_id(value: str, field: str = "task") -> str:
    if not TASK_ID_RE.fullmatch(value):
        raise UsageError(f"invalid task id {value!r}: expected 4-32 hex characters", field=field)
    return value


def queue_name(value: str, field: str = "queue") -> str:
    if not QUEUE_RE.fullmatch(value):
        raise UsageError(
            f"invalid queue name {value!r}: expected letters, digits, '_', '.', '-' (at most 64, starting with a letter or digit)",
            field=field,
        )
    return value


def worker_id(value: str, field: str = "worker") -> str:
    if not WORKER_RE.fullmatch(value):
        raise UsageError(
            f"invalid worker id {value!r}: expected letters, digits and '_.:,-' (starting with a letter or digit)",
            field=field,
        )
    return value


def env_name(value: str, field: str = "env") -> str:
    if not ENV_NAME_RE.fullmatch(value):
        raise UsageError(f"invalid environment variable name {value!r}: expected [A-Za-z_][A-Za-z0-9_]*", field=field)
    return value
