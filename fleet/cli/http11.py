"""One HTTP/1.1 exchange over a fresh connection: what ``fleetctl`` needs, no more.

A client command makes one to four requests to a manager on this host and
then exits; the standard library's ``http.client`` costs its import of
``email`` (header parsing) and ``ssl`` on every command, httpx several times
that.  Here: a request with ``Connection: close``, the status line, the
headers, and the body by ``Content-Length``, ``chunked`` or until the server
closes.  TLS (an ``https`` ``FLEET_API_URL``) imports ``ssl`` when used.
Errors of the connection are ``OSError``s (a timeout included) or
:class:`ProtocolError`.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from io import BufferedReader

MAX_LINE = 65536  # a status or header line longer than this is not a server we know


class ProtocolError(Exception):
    """The answer is not HTTP/1.1 as fleet's manager speaks it."""


@dataclass(frozen=True)
class Target:
    """Where to connect: a unix socket path, or a host and port (with TLS or not)."""

    host: str
    port: int
    tls: bool = False
    uds: str | None = None


class Response:
    """A status, headers (names lower-cased) and a body still to be read."""

    def __init__(self, sock: socket.socket, reader: BufferedReader, status: int, reason: str, headers: dict[str, str]):
        self.status, self.reason, self.headers = status, reason, headers
        self._sock, self._reader = sock, reader

    def chunks(self) -> Iterator[bytes]:
        """The body, as it arrives."""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            while True:
                size = int(_line(self._reader).split(b";", 1)[0], 16)
                if size == 0:
                    return
                data = self._reader.read(size)
                if len(data) < size:
                    raise ProtocolError("the answer ended inside a chunk")
                _line(self._reader)
                yield data
        length = self.headers.get("content-length")
        if length is not None:
            data = self._reader.read(int(length))
            if len(data) < int(length):
                raise ProtocolError("the answer ended before its Content-Length")
            yield data
            return
        while data := self._reader.read1(65536):
            yield data

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def close(self) -> None:
        self._reader.close()
        self._sock.close()


def exchange(
    target: Target, method: str, path: str, headers: Mapping[str, str], body: bytes | None, timeout: float | None
) -> Response:
    """Send one request and read the answer's status and headers."""
    sock = _connect(target, timeout)
    try:
        host = "fleet.sock" if target.uds is not None else f"{target.host}:{target.port}"
        head = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close", "Accept-Encoding: identity"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body or b'')}")
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b""))
        reader = sock.makefile("rb")
        status, reason = _status(_line(reader))
        fields: dict[str, str] = {}
        while line := _line(reader).rstrip(b"\r\n"):
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise ProtocolError(f"a header line without ':': {line[:80]!r}")
            fields[name.strip().lower()] = value.strip()
        return Response(sock, reader, status, reason, fields)
    except BaseException:
        sock.close()
        raise


def _connect(target: Target, timeout: float | None) -> socket.socket:
    if target.uds is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(target.uds)
        except OSError:
            sock.close()
            raise
        return sock
    sock = socket.create_connection((target.host, target.port), timeout=timeout)
    if not target.tls:
        return sock
    import ssl  # only for an https FLEET_API_URL

    try:
        return ssl.create_default_context().wrap_socket(sock, server_hostname=target.host)
    except OSError:
        sock.close()
        raise


def _line(reader: BufferedReader) -> bytes:
    line = reader.readline(MAX_LINE + 1)
    if not line.endswith(b"\n"):
        raise ProtocolError(
            "the connection closed in the middle of the answer" if len(line) <= MAX_LINE else "line too long"
        )
    return line


def _status(line: bytes) -> tuple[int, str]:
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP answer: {line[:80]!r}")
    return int(parts[1]), parts[2] if len(parts) > 2 else ""
