"""Dependencies shared by the routes, and what the app needs of its host.

The app depends on :class:`Backend`, an interface, not on the manager
module: the manager (:class:`fleet.manager.daemon.Manager`) builds the app and
passes itself in.  Routes change state only through the service's
operations (:mod:`fleet.service`)."""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import Depends, Path, Query, Request
from pydantic import AfterValidator

from fleet.api.auth import Access, Caller
from fleet.api.schemas import as_value_error
from fleet.core.config import Config
from fleet.core.errors import Unauthorized
from fleet.core.home import Home
from fleet.core.nvml import Nvml
from fleet.core.validate import queue_name, task_id, worker_id
from fleet.metrics.sampler import Sampler
from fleet.service.operations import Service
from fleet.service.who import Who


class Backend(Protocol):
    """What the routes need: the operations, the home (task logs), the config,
    who may call (the token, sessions), and what the manager tells about itself."""

    @property
    def service(self) -> Service: ...

    @property
    def home(self) -> Home: ...

    @property
    def config(self) -> Config: ...

    @property
    def access(self) -> Access: ...

    @property
    def hostname(self) -> str: ...

    @property
    def nvml(self) -> Nvml: ...

    @property
    def sampler(self) -> Sampler: ...

    @property
    def url(self) -> str: ...

    @property
    def started_at(self) -> float: ...

    @property
    def stopping(self) -> bool:
        """A shutdown (or hand-over) has begun."""
        ...

    def shutdown(self, drain: bool, requeue: bool, by: str) -> None:
        """Stop every worker (tasks are stopped, or drained), then the manager."""
        ...


def get_backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


BackendDep = Annotated[Backend, Depends(get_backend)]


def get_service(request: Request) -> Service:
    return get_backend(request).service


ServiceDep = Annotated[Service, Depends(get_service)]


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


def get_who(request: Request) -> Who:
    """The caller as the service's operations take it (events say ``api:USER``)."""
    caller = get_caller(request)
    return Who(caller.user, caller.admin, f"api:{caller.user}")


CallerDep = Annotated[Caller, Depends(get_caller)]
WhoDep = Annotated[Who, Depends(get_who)]
TaskId = Annotated[
    str,
    Path(description="a task id or a unique prefix of 4+ characters"),
    AfterValidator(as_value_error(task_id)),
]
WorkerId = Annotated[str, Path(description="a worker id"), AfterValidator(as_value_error(worker_id))]
QueueRef = Annotated[str, Path(description="queue name or id"), AfterValidator(as_value_error(queue_name))]
HostFilter = Annotated[
    str | None, Query(min_length=1, max_length=255, description="only this host's (default: every host's)")
]
