"""Records for unit tests: an in-progress task and an idle static worker, with plain
defaults; and :class:`FakeNvml`, a driver with a given number of GPUs."""

from __future__ import annotations

from typing import Any

from fleet.core.models import Script, Task, TaskStatus, Worker, WorkerMode, WorkerState
from fleet.core.nvml import GpuUnit, Nvml


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


def live_worker(wid: str, gpus: list[int] | None, queues: list[str], fairness: bool = False, host: str = "h") -> Worker:
    """An idle static worker on ``host``."""
    return Worker(
        id=wid,
        host=host,
        mode=WorkerMode.STATIC,
        gpus=gpus,
        queues=queues,
        order_fairness=fairness,
        state=WorkerState.IDLE,
        state_reason="",
        created_at=0.0,
    )


class FakeNvml(Nvml):
    """Stands in for NVML with ``count`` GPUs (None: no driver).  A GPU cannot
    exist on the machine these tests run on, so this is the only way to reach
    the code paths of a host that has one."""

    def __init__(self, count: int | None) -> None:
        super().__init__()
        self.count = count

    @property
    def available(self) -> bool:
        return self.count is not None

    def device_count(self) -> int:
        return self.count or 0

    def units(self) -> list[GpuUnit]:
        return [GpuUnit(i, i, f"GPU-fake-{i}", False) for i in range(self.count or 0)]
