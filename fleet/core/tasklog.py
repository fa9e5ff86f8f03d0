"""Task logs: one file per task, every line timestamped as it arrives.

A line is ``<ISO-8601 UTC time> <text>``; lines that fleet itself writes
(attempt headers, exit notes) carry ``[fleet]`` after the time.  The file
grows across attempts.  Output past ``fleet.log_max_mb`` is dropped with one
note, so a runaway task cannot fill the disk.

A log that cannot be written (``ENOSPC``, ``EIO``, a read-only file system)
never raises into its writer (a worker, ``fleetctl execute``, the manager
for a remote executor): the first failure is kept in :attr:`TaskLog.error`
(``log cannot be written: No space left on device``), nothing more is written,
and the writer stops the task with that reason.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

MAX_PARTIAL = 64 * 1024
LOG_FAILED = "log cannot be written"
MIN_ROOM = 1024 * 1024  # workers claim no task while the logs' file system has less free


def no_room(folder: Path) -> str | None:
    """Why a new task's log would not fit under ``folder`` (None: it would)."""
    try:
        stat = os.statvfs(folder)
    except OSError as exc:
        return f"task logs under {folder}: {exc.strerror or exc}"
    if stat.f_bavail * stat.f_frsize < MIN_ROOM:
        return f"no space left for task logs under {folder}"
    return None


def stamp(now: float | None = None) -> str:
    now = time.time() if now is None else now
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class TaskLog:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._fh = os.fdopen(fd, "ab", buffering=0)
        self.size = path.stat().st_size
        self._partial = b""
        self._capped = False
        self.tail: list[str] = []
        self.error: str | None = None  # why the log cannot be written (nothing is, from then on)

    def note(self, text: str) -> None:
        """A line written by fleet itself; never capped."""
        self._write([f"{stamp()} [fleet] {text}".encode()], force=True)

    def feed(self, data: bytes) -> None:
        """Raw output from the task; complete lines are written at once."""
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        if len(self._partial) > MAX_PARTIAL:
            lines.append(self._partial)
            self._partial = b""
        if lines:
            now = stamp()
            self._remember(lines)
            self._write([now.encode() + b" " + line.rstrip(b"\r") for line in lines])

    def flush_partial(self) -> None:
        if self._partial:
            self._remember([self._partial])
            self._write([stamp().encode() + b" " + self._partial])
            self._partial = b""

    def _remember(self, lines: list[bytes]) -> None:
        self.tail.extend(line.decode("utf-8", "replace").rstrip("\r") for line in lines[-10:])
        del self.tail[:-10]

    def _write(self, lines: list[bytes], force: bool = False) -> None:
        if self.error is not None:
            return
        blob = b"\n".join(lines) + b"\n"
        if not force and self.size + len(blob) > self.max_bytes:
            if self._capped:
                return
            self._capped = True
            blob = f"{stamp()} [fleet] log limit of {self.max_bytes / 2**20:g} MB reached; further output is dropped (fleet.log_max_mb)\n".encode()
        view = memoryview(blob)
        try:
            while view:  # an unbuffered write may take part of it (a disk filling up)
                done = self._fh.write(view) or 0
                self.size += done
                view = view[done:]
        except OSError as exc:
            self.error = f"{LOG_FAILED}: {exc.strerror or exc}"

    def close(self) -> None:
        self.flush_partial()
        try:
            self._fh.close()
        except OSError as exc:
            self.error = self.error or f"{LOG_FAILED}: {exc.strerror or exc}"


def strip_stamp(line: str) -> str:
    """``2026-11-25T20:51:31.123Z text`` -> ``text``."""
    head, sep, rest = line.partition(" ")
    return rest if sep and head.endswith("Z") and len(head) == 24 else line
