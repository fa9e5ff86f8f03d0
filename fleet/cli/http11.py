"""One HTTP/1.1 exchange over a fresh connection, through the standard
library's :mod:`http.client`: what ``fleetctl`` needs, no more.

A client command makes one to four requests to a manager on this host and
then exits.  httpx costs several times the start-up budget of a client
command (its import alone), so ``fleetctl`` speaks through ``http.client``
(a unix socket or TCP; TLS only for an ``https`` ``FLEET_API_URL``).  Errors
of the connection are ``OSError``s (a timeout included) or
:class:`ProtocolError` (an answer that is not HTTP, or one cut short).
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass


class ProtocolError(Exception):
    """The answer is not HTTP/1.1 as fleet's manager speaks it."""


@dataclass(frozen=True)
class Target:
    """Where to connect: a unix socket path, or a host and port (with TLS or not)."""

    host: str
    port: int
    tls: bool = False
    uds: str | None = None


class _UnixConnection(http.client.HTTPConnection):
    """``http.client`` over a unix socket (the manager's ``api.sock``)."""

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


class Response:
    """A status, headers (names lower-cased) and a body still to be read."""

    def __init__(self, conn: http.client.HTTPConnection, answer: http.client.HTTPResponse) -> None:
        self.status, self.reason = answer.status, answer.reason
        self.headers = {name.lower(): value for name, value in answer.getheaders()}
        self._conn, self._answer = conn, answer

    def chunks(self) -> Iterator[bytes]:
        """The body, as it arrives."""
        try:
            while data := self._answer.read1(65536):
                yield data
            if self._answer.length:  # read1 stops at the end of the stream, without a word
                raise ProtocolError("the answer ended before its Content-Length")
        except http.client.HTTPException as exc:
            raise ProtocolError(f"the answer ended early ({type(exc).__name__})") from exc

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def close(self) -> None:
        self._answer.close()
        self._conn.close()


def exchange(
    target: Target, method: str, path: str, headers: Mapping[str, str], body: bytes | None, timeout: float | None
) -> Response:
    """Send one request and read the answer's status and headers."""
    conn = _connection(target, timeout)
    try:
        sent = {"Connection": "close", "Accept-Encoding": "identity", **headers}
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        conn.request(method, path, body=body, headers=sent)
        try:
            answer = conn.getresponse()
        except http.client.BadStatusLine as exc:
            raise ProtocolError(f"not an HTTP answer: {str(exc)[:80]!r}") from exc
        except http.client.HTTPException as exc:
            raise ProtocolError(f"not an HTTP answer ({type(exc).__name__}: {str(exc)[:80]})") from exc
        return Response(conn, answer)
    except BaseException:
        conn.close()
        raise


def _connection(target: Target, timeout: float | None) -> http.client.HTTPConnection:
    if target.uds is not None:
        return _UnixConnection(target.uds, timeout)
    if target.tls:
        return http.client.HTTPSConnection(target.host, target.port, timeout=timeout)
    return http.client.HTTPConnection(target.host, target.port, timeout=timeout)
