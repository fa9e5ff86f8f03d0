"""Dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from fleet.manager import Manager


def get_manager(request: Request) -> Manager:
    manager: Manager = request.app.state.manager
    return manager


ManagerDep = Annotated[Manager, Depends(get_manager)]
TaskId = Annotated[str, Path(pattern=r"^[0-9a-f]{4,32}$", description="a task id or a unique prefix of 4+ characters")]
WorkerId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:,\-]{0,127}$")]
QueueRef = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$", description="queue name or id")]
