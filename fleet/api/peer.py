"""The API's unix socket, and the kernel's word on who is at the other end.

uvicorn serves the socket beside the TCP one (one server, two listening
sockets).  :class:`PeerCredProtocol` is uvicorn's h11 protocol with one
addition: when a connection comes in on a unix socket it reads
``SO_PEERCRED`` once and puts the peer's uid in every request's scope under
:data:`PEER_UID`.  A TCP connection never has that key, and no header can set
it, so :mod:`fleet.api.app` can trust it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from fleet.core.home import Home

log = logging.getLogger(__name__)

PEER_UID = "fleet.peer_uid"
_UNIX_PATH_MAX = 107  # sun_path is 108 bytes with its NUL


def peer_uid(sock: socket.socket) -> int:
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return int(uid)


class PeerCredProtocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is None or sock.family != socket.AF_UNIX:
            return
        uid = peer_uid(sock)
        inner = self.app

        async def with_peer(scope: Any, receive: Any, send: Any) -> None:
            scope[PEER_UID] = uid
            await inner(scope, receive, send)

        self.app = with_peer


def bind_unix(home: Home, gid: int | None) -> socket.socket | None:
    """Listen on ``api.sock`` (0600, or 0660 owned by ``gid``); None, with a
    warning, when the path is too long for a unix socket (clients then use TCP)."""
    path = home.api_sock
    if len(os.fsencode(path)) > _UNIX_PATH_MAX:
        log.warning("api: %s is too long for a unix socket; serving TCP only", path)
        return None
    path.unlink(missing_ok=True)  # left by a manager that died: we hold the home's lock
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # never world-connectable, not even between bind and chmod
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    if gid is not None:
        os.chown(path, -1, gid)
        os.chmod(path, 0o660)
    sock.listen(128)
    return sock
