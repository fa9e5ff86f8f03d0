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


def _matching(pattern: re.Pattern[str], value: str, field: str, what: str, expected: str) -> str:
    if not pattern.fullmatch(value):
        raise UsageError(f"invalid {what} {value!r}: expected {expected}", field=field)
    return value


def task_id(value: str, field: str = "task") -> str:
    return _matching(TASK_ID_RE, value, field, "task id", "4-32 hex characters")


def queue_name(value: str, field: str = "queue") -> str:
    expected = "letters, digits, '_', '.', '-' (at most 64, starting with a letter or digit)"
    return _matching(QUEUE_RE, value, field, "queue name", expected)


def worker_id(value: str, field: str = "worker") -> str:
    expected = "letters, digits and '_.:,-' (starting with a letter or digit)"
    return _matching(WORKER_RE, value, field, "worker id", expected)


def env_name(value: str, field: str = "env") -> str:
    return _matching(ENV_NAME_RE, value, field, "environment variable name", "[A-Za-z_][A-Za-z0-9_]*")
