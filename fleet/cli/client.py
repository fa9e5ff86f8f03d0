"""How ``fleetctl`` finds and talks to the manager of its ``FLEET_HOME``.

``FLEET_API_URL`` wins (over TCP, with the token); otherwise, when the
manager's unix socket ``$FLEET_HOME/api.sock`` answers, fleetctl talks
through it and the kernel tells the manager who is calling (no token
needed); else ``$FLEET_HOME/manager.json`` names the URL and pid, and the
token is ``FLEET_API_TOKEN``, ``fleet.api.token`` or ``$FLEET_HOME/api.token``.
HTTP errors are turned back into fleet's exceptions, so the CLI's exit
codes follow the API's status codes.

The client is the standard library's ``http.client``, one connection per
request: importing httpx (with httpcore, h11 and a TLS context loading the
CA bundle) cost more than half of a ``fleetctl submit``, and a command makes
one to four requests to a manager on this host.
"""

from __future__ import annotations

import http.client
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from json import dumps as json_dumps
from json import loads as json_loads
from typing import Any
from urllib.parse import urlencode, urlsplit

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


@dataclass(frozen=True)
class Raw:
    """An answer that is not JSON (a task's log): its bytes."""

    content: bytes


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over the manager's unix socket."""

    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("fleet.sock", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _query(params: Mapping[str, Any] | None) -> str:
    """``?a=1&b=true`` (booleans as ``true``/``false``, None as empty, as httpx sends them)."""
    if not params:
        return ""
    pairs = [
        (k, "true" if v is True else "false" if v is False else "" if v is None else str(v)) for k, v in params.items()
    ]
    return "?" + urlencode(pairs)


class Client:
    def __init__(self, base_url: str, token: str = "", timeout: float = 30.0, uds: str | None = None) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self._uds = uds
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = urlsplit(_SOCKET_URL if uds is not None else base_url)
        self._url = url
        self._prefix = url.path.rstrip("/") + "/api/v1"

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self._uds is not None:
            return _UnixConnection(self._uds, timeout)
        host, port = self._url.hostname or "localhost", self._url.port
        if self._url.scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=timeout)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        body: Any,
        timeout: float | None,
        verb: str = "cannot reach",
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        headers = {**self._headers, "Connection": "close"}
        data = None
        if body is not None:
            data = json_dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = self._connection(timeout)
        try:
            conn.request(method, self._prefix + path + _query(params), body=data, headers=headers)
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise ManagerUnavailable(f"{verb} the manager at {self.base_url}: {exc}") from exc

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None) -> Any:
        conn, response = self._send(method, path, params, json, self.timeout)
        try:
            content = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ManagerUnavailable(f"lost the manager at {self.base_url}: {exc}") from exc
        finally:
            conn.close()
        if response.status >= 400:
            raise _error(response, content)
        if (response.getheader("content-type") or "").startswith("application/json"):
            return json_loads(content)
        return Raw(content)

    def get(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None) -> Any:
        return self.request("POST", path, params=params, json=json)

    def stream(self, path: str, params: Mapping[str, Any]) -> Iterator[bytes]:
        conn, response = self._send("GET", path, params, None, None, verb="lost")
        try:
            if response.status >= 400:
                raise _error(response, response.read())
            while chunk := response.read1(65536):
                yield chunk
        except (OSError, http.client.HTTPException) as exc:
            raise ManagerUnavailable(f"lost the manager at {self.base_url}: {exc}") from exc
        finally:
            conn.close()

    def close(self) -> None:
        """Nothing is held between requests (one connection each)."""


def _error(response: http.client.HTTPResponse, content: bytes) -> FleetError:
    status = response.status
    try:
        body = json_loads(content)
        message = str(body.get("error") or body)
        field = body.get("field")
    except (ValueError, AttributeError):
        message, field = content.decode("utf-8", "replace").strip() or response.reason, None
    cls = _BY_STATUS.get(status, UsageError if 400 <= status < 500 else FleetError)
    return cls(message, field=field)
