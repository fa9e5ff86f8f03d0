"""Dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from pydantic import AfterValidator

from fleet.api.schemas import as_value_error
from fleet.manager import Manager
from fleet.validate import queue_name, task_id, worker_id


def get_manager(request: Request) -> Manager:
    manager: Manager = request.app.state.manager
    return manager


ManagerDep = Annotated[Manager, Depends(get_manager)]
TaskId = Annotated[
    str,
    Path(description="a task id or a unique prefix of 4+ characters"),
    AfterValidator(as_value_error(task_id)),
]
WorkerId = Annotated[str, Path(description="a worker id"), AfterValidator(as_value_error(worker_id))]
QueueRef = Annotated[str, Path(description="queue name or id"), AfterValidator(as_value_error(queue_name))]
