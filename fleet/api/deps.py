"""Dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from pydantic import AfterValidator

from fleet.api.auth import Caller
from fleet.api.schemas import as_value_error
from fleet.errors import Unauthorized
from fleet.manager import Manager
from fleet.validate import queue_name, task_id, worker_id


def get_manager(request: Request) -> Manager:
    manager: Manager = request.app.state.manager
    return manager


ManagerDep = Annotated[Manager, Depends(get_manager)]


def get_caller(request: Request) -> Caller:
    """Who sent the request (set by the app's authentication middleware)."""
    caller: Caller | None = getattr(request.state, "caller", None)
    if caller is None:
        raise Unauthorized("missing or wrong API token (Authorization: Bearer ...)")
    return caller


def optional_caller(request: Request) -> Caller | None:
    """The caller on an open route, None when the request carried no valid credentials."""
    caller: Caller | None = getattr(request.state, "caller", None)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
TaskId = Annotated[
    str,
    Path(description="a task id or a unique prefix of 4+ characters"),
    AfterValidator(as_value_error(task_id)),
]
WorkerId = Annotated[str, Path(description="a worker id"), AfterValidator(as_value_error(worker_id))]
QueueRef = Annotated[str, Path(description="queue name or id"), AfterValidator(as_value_error(queue_name))]
