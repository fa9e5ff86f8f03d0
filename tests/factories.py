"""Records for unit tests: an in-progress task and an idle static worker, with plain defaults."""

from __future__ import annotations

from typing import Any

from fleet.core.models import Script, Task, TaskStatus, Worker, WorkerMode, WorkerState


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


def live_worker(wid: str, gpus: list[int] | None, queues: list[str], fairness: bool = False) -> Worker:
    """An idle static worker on host ``h``."""
    return Worker(
        id=wid,
        host="h",
        mode=WorkerMode.STATIC,
        gpus=gpus,
        queues=queues,
        order_fairness=fairness,
        state=WorkerState.IDLE,
        state_reason="",
        created_at=0.0,
    )
