"""Records for unit tests: an in-progress task with plain defaults."""

from __future__ import annotations

from typing import Any

from fleet.models import Script, Task, TaskStatus


def running_task(script: Script, **fields: Any) -> Task:
    """A task in progress running ``script``; ``fields`` override any other field."""
    values: dict[str, Any] = {
        "id": "ab" * 16,
        "name": "t",
        "status": TaskStatus.IN_PROGRESS,
        "status_reason": "",
        "queue": "q",
        "priority": 0,
        "env": {},
        "user": "",
        "created_at": 0.0,
    }
    values.update(fields)
    return Task(script=script, **values)
