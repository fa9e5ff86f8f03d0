"""Wake-ups: how an idle worker hears of new work within milliseconds.

Each worker listens on a Linux abstract-namespace datagram socket whose name is
derived from ``FLEET_HOME`` and its worker id (no file to clean up, no path
length limit).  Whoever changes what a worker should do (a task enqueued, an
abort, a stop request) sends it one byte after committing the change.  A lost
datagram costs at most the worker's fallback poll interval; correctness never
depends on delivery, only latency does.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from pathlib import Path

log = logging.getLogger(__name__)


def address(home: Path, worker_id: str) -> bytes:
    digest = hashlib.sha1(f"{home.resolve()}\0{worker_id}".encode()).hexdigest()[:24]
    return b"\0fleet-" + digest.encode()


class Listener:
    """The receiving end, owned by one worker process."""

    def __init__(self, home: Path, worker_id: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address(home, worker_id))
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> int:
        """Read every pending wake-up; return how many there were."""
        count = 0
        while True:
            try:
                self.sock.recv(64)
            except BlockingIOError:
                return count
            count += 1

    def close(self) -> None:
        self.sock.close()


def wake(home: Path, worker_ids: list[str]) -> None:
    """Poke each worker; a worker that is not listening is skipped silently."""
    if not worker_ids:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for wid in worker_ids:
            try:
                sock.sendto(b"!", address(home, wid))
            except (ConnectionRefusedError, FileNotFoundError, BlockingIOError):
                pass
            except OSError as exc:
                log.debug("wake %s: %s", wid, exc)
