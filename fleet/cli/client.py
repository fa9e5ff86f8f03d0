"""How ``fleetctl`` finds and talks to the manager of its ``FLEET_HOME``.

``FLEET_API_URL`` wins (over TCP, with the token); otherwise, when the
manager's unix socket ``$FLEET_HOME/api.sock`` answers, fleetctl talks
through it and the kernel tells the manager who is calling (no token
needed); else ``$FLEET_HOME/manager.json`` names the URL and pid, and the
token is ``FLEET_API_TOKEN``, ``fleet.api.token`` or ``$FLEET_HOME/api.token``.
HTTP errors are turned back into fleet's exceptions, so the CLI's exit
codes follow the API's status codes.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from fleet.errors import Conflict, FleetError, Forbidden, ManagerUnavailable, NotFound, Unauthorized, UsageError
from fleet.home import Home

_BY_STATUS: dict[int, type[FleetError]] = {401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict}
_SOCKET_URL = "http://fleet.sock"


@dataclass(frozen=True)
class Endpoint:
    """Where the manager answers: ``uds`` set means through its unix socket
    (``url`` is then the TCP URL when known, for messages and the page)."""

    url: str
    pid: int | None
    uds: str | None = None


def manager_url(home: Home) -> Endpoint | None:
    """Where the manager serving ``home`` answers, or None when none runs."""
    env_url = os.environ.get("FLEET_API_URL")
    if env_url:
        return Endpoint(env_url.rstrip("/"), None)
    info = home.read_manager_info()
    if info and isinstance(info.get("pid"), int) and not pid_running(info["pid"]):
        return None
    url = str(info["url"]).rstrip("/") if info else ""
    pid = int(info["pid"]) if info else None
    if _answers(home.api_sock):  # a member of fleet.api.group cannot read manager.json
        return Endpoint(url or _SOCKET_URL, pid, str(home.api_sock))
    return Endpoint(url, pid) if info else None


def _answers(path: os.PathLike[str]) -> bool:
    """A manager listens on the unix socket ``path`` (not a file left by a dead one)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def pid_running(pid: int) -> bool:
    """Process ``pid`` is alive and not a zombie (a killed manager whose parent
    has not reaped it yet).  Read from ``/proc`` (fleet runs on Linux): cheaper
    to import than psutil, which a client command does not load."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return True  # it exists; we may just not read it
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"


class Client:
    def __init__(self, base_url: str, token: str = "", timeout: float = 30.0, uds: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url
        if uds is None:
            self.http = httpx.Client(base_url=base_url + "/api/v1", headers=headers, timeout=timeout)
        else:
            transport = httpx.HTTPTransport(uds=uds)
            self.http = httpx.Client(
                base_url=_SOCKET_URL + "/api/v1", headers=headers, timeout=timeout, transport=transport
            )

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
