"""The page's login: a one-time code, minted by an authenticated call
(``fleetctl page``), is traded once for an HttpOnly, SameSite=Strict cookie.

The code travels in the URL's fragment (``/#login=CODE``), which browsers
never send to the server or keep in the server's logs; the page posts it
here and removes it from the address bar and history."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from fleet.api.auth import LOGIN_CODE_S, SESSION_S
from fleet.api.deps import BackendDep, CallerDep
from fleet.api.schemas import LoginBody

router = APIRouter(tags=["login"])


@router.post("/login/codes", status_code=201)
def mint(caller: CallerDep, backend: BackendDep) -> dict[str, Any]:
    """A one-time login code for the page (good for LOGIN_CODE_S seconds), and
    the URL that carries it; the page then acts as this caller."""
    code = backend.access.mint_code(caller)
    return {"code": code, "expires_in": LOGIN_CODE_S, "url": f"{backend.url}/#login={code}", "user": caller.user}


@router.post("/login")
def login(body: LoginBody, backend: BackendDep) -> JSONResponse:
    session, caller = backend.access.redeem(body.code)
    response = JSONResponse({"user": caller.user})
    response.set_cookie(
        backend.access.cookie, session, max_age=int(SESSION_S), httponly=True, samesite="strict", path="/"
    )
    return response


@router.post("/logout")
def logout(request: Request, caller: CallerDep, backend: BackendDep) -> JSONResponse:
    backend.access.end_session(request.cookies.get(backend.access.cookie, ""))
    response = JSONResponse({"user": caller.user, "status": "logged out"})
    response.delete_cookie(backend.access.cookie, path="/", httponly=True, samesite="strict")
    return response
