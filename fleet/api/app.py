"""The FastAPI application of the manager.

Errors are mapped to HTTP here and only here: a :class:`FleetError` becomes
its ``http_status`` with ``{"error": ..., "field": ...}``; a validation error
becomes a 422 naming the field; anything unexpected is logged and answered as
a JSON 500 (a bug, never an expected outcome of bad input).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleet import __version__
from fleet.errors import FleetError

if TYPE_CHECKING:
    from fleet.manager import Manager

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/api/v1/health"})


def _field(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def create_app(manager: Manager) -> FastAPI:
    from fleet.api import routes_queues, routes_system, routes_tasks, routes_workers

    app = FastAPI(title="fleet", version=__version__, description="Per-host GPU fleet manager")
    app.state.manager = manager

    @app.exception_handler(FleetError)
    async def fleet_error(request: Request, exc: FleetError) -> JSONResponse:
        return JSONResponse(exc.to_json(), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = _field(first.get("loc", ()))
        detail = [{"field": _field(e.get("loc", ())), "message": str(e.get("msg", ""))} for e in errors]
        return JSONResponse(
            {"error": f"{field}: {first.get('msg', 'invalid value')}", "field": field, "detail": detail},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("api: unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.middleware("http")
    async def require_token(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        token = manager.token
        if token and request.url.path not in OPEN_PATHS:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return JSONResponse(
                    {"error": "missing or wrong API token (Authorization: Bearer ...)"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await call_next(request)

    for module in (routes_system, routes_workers, routes_queues, routes_tasks):
        app.include_router(module.router, prefix="/api/v1")
    return app
