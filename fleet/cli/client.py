"""How ``fleetctl`` finds and talks to the manager of its ``FLEET_HOME``.

``FLEET_API_URL`` wins; otherwise ``$FLEET_HOME/manager.json`` names the URL
and pid of the running manager.  HTTP errors are turned back into fleet's
exceptions, so the CLI's exit codes follow the API's status codes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import psutil

from fleet.errors import Conflict, FleetError, ManagerUnavailable, NotFound, Unauthorized, UsageError
from fleet.home import Home

_BY_STATUS: dict[int, type[FleetError]] = {401: Unauthorized, 404: NotFound, 409: Conflict}


def manager_url(home: Home) -> tuple[str, int | None] | None:
    """(url, pid) of the manager serving ``home``, or None when none runs."""
    env_url = os.environ.get("FLEET_API_URL")
    if env_url:
        return env_url.rstrip("/"), None
    info = home.read_manager_info()
    if not info or not isinstance(info.get("pid"), int) or not _running(info["pid"]):
        return None
    return str(info["url"]).rstrip("/"), int(info["pid"])


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed manager whose parent has not reaped it yet)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


class Client:
    def __init__(self, base_url: str, token: str = "", timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url + "/api/v1", headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ManagerUnavailable(f"cannot reach the manager at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise self._error(response)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response

    @staticmethod
    def _error(response: httpx.Response) -> FleetError:
        try:
            body = response.json()
            message = str(body.get("error") or body)
            field = body.get("field")
        except ValueError:
            message, field = response.text.strip() or response.reason_phrase, None
        status = response.status_code
        cls = _BY_STATUS.get(status, UsageError if 400 <= status < 500 else FleetError)
        return cls(message, field=field)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def stream(self, path: str, params: dict[str, Any]) -> Iterator[bytes]:
        try:
            with self.http.stream("GET", path, params=params, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._error(response)
                yield from response.iter_bytes()
        except httpx.TransportError as exc:
            raise ManagerUnavailable(f"lost the manager at {self.base_url}: {exc}") from exc

    def close(self) -> None:
        self.http.close()
