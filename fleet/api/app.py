"""The FastAPI application of the manager.

Errors are mapped to HTTP here and only here: a :class:`FleetError` becomes
its ``http_status`` with ``{"error": ..., "field": ...}``; a validation error
becomes a 422 naming the field; anything unexpected is logged and answered as
a JSON 500 (a bug, never an expected outcome of bad input) by
:class:`fleet.api.guards.CatchAll`, which keeps the connection open.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleet import __version__
from fleet.api import (
    routes_arrays,
    routes_clearml,
    routes_gpus,
    routes_hosts,
    routes_login,
    routes_metrics,
    routes_queues,
    routes_remote,
    routes_system,
    routes_tasks,
    routes_workers,
)
from fleet.api.auth import Caller, basic_matches
from fleet.api.deps import Backend
from fleet.api.guards import BodyGuard, CatchAll
from fleet.api.peer import PEER_UID
from fleet.core.errors import FleetError, Forbidden, Unauthorized, UsageError
from fleet.core.validate import queue_name, task_id, worker_id

log = logging.getLogger(__name__)

# The page's files carry no data (the page asks the API, once logged in, for everything it
# shows), so they are served to anyone; so are a minimal health and the login route.
# Everything else needs a caller (see fleet/api/auth.py).
OPEN_PATHS = frozenset({"/api/v1/health", "/api/v1/login", "/"})
OPEN_PREFIXES = ("/static/",)


# Where a request's path names a task, worker or queue: a segment that no route
# matches (``/tasks/../../etc``) is answered as the bad value it is, not "Not Found".
_PATH_IDS: tuple[tuple[str, Callable[[str, str], str], str], ...] = (
    ("/api/v1/tasks/", task_id, "task_id"),
    ("/api/v1/workers/", worker_id, "worker_id"),
    ("/api/v1/queues/", queue_name, "queue"),
)


def _field(error: Mapping[str, Any]) -> str:
    if error.get("type") == "json_invalid":  # loc is ("body", <character position>)
        return "body"
    parts = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _message(error: Mapping[str, Any]) -> str:
    """pydantic's message without its "Value error, " prefix (our validators' own words)."""
    if error.get("type") == "json_invalid":
        return f"invalid JSON ({error.get('ctx', {}).get('error', 'cannot parse')})"
    message = str(error.get("msg", "invalid value"))
    return message.removeprefix("Value error, ")


def _bad_path_id(path: str) -> UsageError | None:
    for prefix, check, field in _PATH_IDS:
        if path.startswith(prefix):
            try:
                check(path[len(prefix) :].split("/", 1)[0], field)
            except UsageError as exc:
                return exc
    return None


def create_app(backend: Backend) -> FastAPI:
    """The app over ``backend`` (the manager passes itself: see :class:`fleet.api.deps.Backend`)."""
    app = FastAPI(title="fleet", version=__version__, description="Per-host GPU fleet manager")
    app.state.backend = backend
    # Guards (fleet/api/guards.py), added first so that they sit inside every other
    # middleware: the catch-all innermost, then the body's bounds.
    app.add_middleware(CatchAll)
    max_mb = backend.config.fleet.api.max_body_mb
    app.add_middleware(BodyGuard, max_bytes=int(max_mb * 2**20), max_mb=max_mb)

    @app.exception_handler(FleetError)
    async def fleet_error(request: Request, exc: FleetError) -> JSONResponse:
        return JSONResponse(exc.to_json(), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = _field(first)
        detail = [{"field": _field(e), "message": _message(e)} for e in errors]
        return JSONResponse(
            {"error": f"{field}: {_message(first)}", "field": field, "detail": detail},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            bad = _bad_path_id(request.url.path)
            if bad is not None:
                return JSONResponse(bad.to_json(), status_code=bad.http_status)
        body: dict[str, Any] = {"error": str(exc.detail)}
        if exc.status_code == 400:  # FastAPI could not read the body (not UTF-8, not parseable)
            body["field"] = "body"
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    clearml_paths = frozenset(getattr(route, "path", "") for route in routes_clearml.router.routes)
    api_config = backend.config.fleet.api

    def identify(request: Request) -> Caller:
        """The caller, or ``Unauthorized`` / ``Forbidden`` (fleet/api/auth.py)."""
        access = backend.access
        given = request.headers.get("authorization", "")
        uid = request.scope.get(PEER_UID)
        if given:
            basic = request.url.path in clearml_paths and basic_matches(
                given, api_config.access_key, api_config.secret_key
            )
            if not basic and not access.token_matches(given):
                raise Unauthorized("missing or wrong API token (Authorization: Bearer ...)")
            if uid is None:
                return access.owner if not basic else Caller(access.owner.user, access.owner.uid, "basic", True)
        if uid is not None:
            return access.from_peer(uid)
        session = request.cookies.get(access.cookie, "")
        caller = access.from_session(session) if session else None
        if caller is None:
            raise Unauthorized(
                "missing or wrong API token (Authorization: Bearer ...); the page needs a login URL from: fleetctl page"
                if session
                else "missing or wrong API token (Authorization: Bearer ...)"
            )
        return caller

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Every route but the open ones needs a caller; open ones get one when
        the request carries valid credentials (health then says more)."""
        path = request.url.path
        try:
            request.state.caller = identify(request)
        except (Unauthorized, Forbidden) as exc:
            request.state.caller = None
            if path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES):
                headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
                return JSONResponse(exc.to_json(), status_code=exc.http_status, headers=headers)
        return await call_next(request)

    for module in (
        routes_system,
        routes_login,
        routes_workers,
        routes_queues,
        routes_arrays,
        routes_tasks,
        routes_remote,
        routes_metrics,
        routes_gpus,
        routes_hosts,
    ):
        app.include_router(module.router, prefix="/api/v1")
    app.include_router(routes_clearml.router)
    routes_metrics.mount_root(app, backend)  # /metrics and the page, after every API route
    return app
