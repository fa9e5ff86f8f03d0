"""How ``fleetctl`` finds and talks to the manager of its ``FLEET_HOME``.

``FLEET_API_URL`` wins (over TCP, with the token); otherwise, when the
manager's unix socket ``$FLEET_HOME/api.sock`` answers, fleetctl talks
through it and the kernel tells the manager who is calling (no token
needed); else ``$FLEET_HOME/manager.json`` names the URL and pid, and the
token is ``FLEET_API_TOKEN``, ``fleet.api.token`` or ``$FLEET_HOME/api.token``.
HTTP errors are turned back into fleet's exceptions, so the CLI's exit
codes follow the API's status codes.

Requests go through :mod:`fleet.cli.http11` (http.client), one connection each: importing
httpx (with httpcore, h11 and a TLS context loading the CA bundle) cost more
than half of a ``fleetctl submit``, and a command makes one to four requests
to a manager on this host.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from json import dumps as json_dumps
from json import loads as json_loads
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from fleet.cli.http11 import ProtocolError, Response, Target, exchange
from fleet.core.errors import Conflict, FleetError, Forbidden, ManagerUnavailable, NotFound, Unauthorized, UsageError
from fleet.core.home import Home

_BY_STATUS: dict[int, type[FleetError]] = {401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict}
_SOCKET_URL = "http://fleet.sock"
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"  # a path as given, with spaces and the like escaped (as httpx does)


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
        if any(c in token for c in "\r\n\0"):
            raise UsageError("fleet.api.token: a line break or NUL cannot be sent in a header", field="fleet.api.token")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = urlsplit(_SOCKET_URL if uds is not None else base_url)
        tls = url.scheme == "https"
        self._target = Target(url.hostname or "localhost", url.port or (443 if tls else 80), tls, uds)
        self._prefix = url.path.rstrip("/") + "/api/v1"

    def _send(
        self, method: str, path: str, params: Mapping[str, Any] | None, body: Any, timeout: float | None
    ) -> Response:
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json_dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        target = quote(self._prefix + path, safe=_PATH_SAFE) + _query(params)
        try:
            return exchange(self._target, method, target, headers, data, timeout)
        except (OSError, ProtocolError) as exc:
            raise ManagerUnavailable(f"cannot reach the manager at {self.base_url}: {exc}") from exc

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None) -> Any:
        response = self._send(method, path, params, json, self.timeout)
        try:
            content = response.read()
        except (OSError, ProtocolError) as exc:
            raise ManagerUnavailable(f"lost the manager at {self.base_url}: {exc}") from exc
        finally:
            response.close()
        if response.status >= 400:
            raise _error(response.status, response.reason, content)
        if response.headers.get("content-type", "").startswith("application/json"):
            return json_loads(content)
        return Raw(content)

    def get(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None) -> Any:
        return self.request("POST", path, params=params, json=json)

    def stream(self, path: str, params: Mapping[str, Any]) -> Iterator[bytes]:
        response = self._send("GET", path, params, None, None)
        try:
            if response.status >= 400:
                raise _error(response.status, response.reason, response.read())
            yield from response.chunks()
        except (OSError, ProtocolError) as exc:
            raise ManagerUnavailable(f"lost the manager at {self.base_url}: {exc}") from exc
        finally:
            response.close()

    def close(self) -> None:
        """Nothing is held between requests (one connection each)."""


def _error(status: int, reason: str, content: bytes) -> FleetError:
    try:
        body = json_loads(content)
        message = str(body.get("error") or body)
        field = body.get("field")
    except (ValueError, AttributeError):
        message, field = content.decode("utf-8", "replace").strip() or reason, None
    cls = _BY_STATUS.get(status, UsageError if 400 <= status < 500 else FleetError)
    return cls(message, field=field)
