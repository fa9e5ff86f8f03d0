"""Task logs shipped into a shared store, so that every host can read them.

Where a fleet spans many hosts (a PostgreSQL store: :attr:`Store.shared
<fleet.store.interface.Store.shared>`), ``fleetctl logs <id> [-f]``, the API's
log routes and the page work from any host, wherever the task ran and after
that host is gone: the runner ships each attempt's log into the store
(``log_chunks``, :mod:`fleet.store.sqlite_logs`) while the task writes it.
The local file stays, and stays the truth on its host (the API reads it
there: :mod:`fleet.service.tasklogs`).

How (decided once; the cost is measured by ``bench/logship.py``):

- **From the file, in batches.**  A thread per attempt reads back what the
  task's :class:`~fleet.core.tasklog.TaskLog` has written and appends it, at
  most every ``FLUSH_S`` seconds or as soon as ``FLUSH_BYTES`` are waiting,
  whichever comes first, in chunks of at most ``CHUNK`` bytes: a chatty task
  makes a few transactions a second, not one per line.  The bytes are the
  file's (binary-safe, invalid UTF-8 included), so the store's log is bounded
  exactly as the file is (``fleet.log_max_mb``, with the same note when the
  limit is reached: :class:`~fleet.core.tasklog.TaskLog`).
- **Never in the task's way.**  The task's output goes to the file, never
  waits for the store; a store outage (:class:`~fleet.errors.StoreUnavailable`)
  only delays the thread (with back-off), which catches up from the file when
  the store is back.  The attempt's end is recorded only once its log has been
  shipped (:meth:`LogShipper.finish`, called by the runner just before
  ``finish_task``; the end waits for the store anyway), so a reader that sees
  the task ended has its whole log.
- **No gaps, no duplicates.**  A chunk is stored at its byte offset; the
  store refuses one that does not start at the stored log's end, and stores a
  chunk sent again after a lost answer only once (it is sent again byte for
  byte).  Only the task's running attempt may append (checked in the same
  transaction), so a host that lost the task cannot write into the log of
  the attempt that replaced it; a refused chunk ends the shipping of this
  attempt, with a warning in the worker's log (the local file has it all).
- **One log across attempts and hosts.**  A task's log grows across attempts,
  which may run on different hosts.  Before an attempt's first line, the
  store's log past the end of this host's file (earlier attempts that ran
  elsewhere) is copied into the file, so the file and the store hold the
  same bytes at the same offsets, and a reader may move from one to the
  other.  (Should that copy fail, the attempt is shipped after the store's
  end anyway: the store's log stays whole; this host's file lacks the
  earlier attempts.)

SQLite stores ship nothing: one host reads the file itself, and shipping
would write every byte twice to the same disk and take SQLite's single
write lock twice a second per chatty task, delaying every worker's claim.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from fleet.core.errors import FleetError, StoreUnavailable
from fleet.core.models import Task
from fleet.core.tasklog import TaskLog
from fleet.store import Store
from fleet.store.faults import Backoff
from fleet.store.interface import MAX_LOG_CHUNK

log = logging.getLogger(__name__)

FLUSH_S = 0.5  # ship what waits at least this often
FLUSH_BYTES = 64 * 1024  # ... or as soon as this much waits
CHUNK = MAX_LOG_CHUNK  # the most one append carries (a slow store gets fewer, larger transactions)


class LogShipper:
    """Ships one attempt's log file into the store (see the module docstring)."""

    def __init__(self, store: Store, task: Task, path: Path, stored: int | None) -> None:
        self.store = store
        self.task_id = task.id
        self.attempt = task.attempt
        self.path = path
        self.sent = self._file_size(path)  # the file's bytes before this offset are the store's already
        # the store's offset of the file's byte ``sent`` (None: not known yet, asked at the first flush)
        self.stored = stored
        self.gave_up: str | None = None  # why this attempt's log is no longer shipped
        self._log: TaskLog | None = None
        self._pending: bytes | None = None  # the chunk at ``sent``, until stored: sent again as is
        self._retry = Backoff()
        self._wake = threading.Event()
        self._closing = threading.Event()  # the attempt ended: ship the rest, then stop
        self._thread: threading.Thread | None = None

    @classmethod
    def prepare(cls, store: Store, task: Task, path: Path, max_bytes: int) -> LogShipper | None:
        """Before the attempt's log is opened: a shipper for it (None where the
        store is not shared), with the store's log from earlier attempts on
        other hosts copied into the file first (at most ``max_bytes`` of file)."""
        if not store.shared:
            return None
        if task.attempt <= 1:  # nothing ran before: the store holds none of its log
            return cls(store, task, path, 0)
        try:
            stored = store.log_size(task.id)
            _copy_in(store, task.id, path, stored, max_bytes)
        except StoreUnavailable:
            return cls(store, task, path, None)
        except OSError as exc:  # the file cannot take them: its own writes will say so
            log.warning("task %s: earlier attempts' log not copied into %s: %s", task.id, path, exc.strerror or exc)
        return cls(store, task, path, stored)

    @staticmethod
    def _file_size(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0

    def start(self, task_log: TaskLog) -> None:
        """Ship what ``task_log`` writes, from the offset the file had when prepared."""
        self._log = task_log
        self._thread = threading.Thread(target=self._run, name=f"logship-{self.task_id[:8]}", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """The task wrote: ship now if a batch is waiting (cheap; called on every turn of the runner)."""
        if self._log is not None and self._log.size - self.sent >= FLUSH_BYTES:
            self._wake.set()

    def finish(self) -> bool:
        """The attempt ended (its log is closed): ship the rest, without waiting
        for it.  True once all of it is in the store (or shipping gave up);
        False until then: call again (while the store is unavailable nothing is
        lost, the file has it)."""
        thread = self._thread
        if thread is None:
            return True
        self._closing.set()
        self._wake.set()
        return not thread.is_alive()

    def abandon(self, why: str) -> None:
        """Ship nothing more: the attempt was taken from this host (fenced), its
        log in the store belongs to the attempt that runs now."""
        self._give_up(why)
        self._wake.set()

    def _run(self) -> None:
        while self.gave_up is None:
            closing = self._closing.is_set()  # read first: once set, the log's size is final
            if self._retry.ready() and self._ship() and closing:
                return
            self._wake.wait(self._retry.remaining() if closing else max(FLUSH_S, self._retry.remaining()))
            self._wake.clear()

    def _ship(self) -> bool:
        """Append what the file has that the store has not; False when the store is unavailable."""
        task_log = self._log
        while self.gave_up is None and task_log is not None and (self._pending or self.sent < task_log.size):
            try:
                at = self.store.log_size(self.task_id) if self.stored is None else self.stored
                self.stored = at
                if self._pending is None:
                    self._pending = self._read(self.sent, min(CHUNK, task_log.size - self.sent))
                data = self._pending
                self.store.append_log(self.task_id, self.attempt, at, data)
            except StoreUnavailable:
                self._retry.failed()
                return False
            except (FleetError, OSError) as exc:
                self._give_up(str(exc) if isinstance(exc, FleetError) else (exc.strerror or str(exc)))
                return True
            self._retry.ok()
            self._pending = None
            self.sent += len(data)
            self.stored = at + len(data)
        return True

    def _read(self, offset: int, size: int) -> bytes:
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(size)
        if not data:
            raise OSError(f"{self.path} ends before byte {offset + size}")
        return data

    def _give_up(self, why: str) -> None:
        self.gave_up = why
        self._pending = None
        log.warning(
            "task %s: attempt %d's log is no longer shipped to the store (%s); the whole log stays in %s on this host",
            self.task_id,
            self.attempt,
            why,
            self.path,
        )


def _copy_in(store: Store, task_id: str, path: Path, stored: int, max_bytes: int) -> None:
    """Copy the store's log past the end of the file at ``path`` into it (earlier attempts run elsewhere)."""
    size = LogShipper._file_size(path)
    end = min(stored, max(max_bytes, size))
    if size >= end:
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as fh:
        while size < end:
            part = store.read_log(task_id, size, min(CHUNK, end - size)).data
            if not part:
                return
            fh.write(part)
            size += len(part)
