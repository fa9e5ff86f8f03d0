"""Reading a task's log, wherever the task ran (the API's log routes, and
through them ``fleetctl logs [-f]`` and the page).

Where the log is read from:

- the local file, where this host ran the task's last attempt (the file is
  the truth on its host, ahead of the store by at most one batch), and on a
  store that is not shared (SQLite: one host, nothing is shipped);
- otherwise the store's copy, which the host that ran it ships while the task
  writes (:mod:`fleet.worker.logship`): another host's task, or one whose host
  is gone;
- the local file again when the store holds none of the log: a remote
  executor's task, whose log only the manager it reports to writes
  (:mod:`fleet.service.remote`).

The file and the store hold the same bytes at the same offsets (the shipper
copies earlier attempts into the file before an attempt starts), so a
reader following a log keeps its offset when its source changes.
"""

from __future__ import annotations

import os

from fleet.core.errors import Conflict, StoreError
from fleet.core.home import Home
from fleet.core.models import Task
from fleet.store import Store


class TaskLogs:
    def __init__(self, store: Store, home: Home, hostname: str) -> None:
        self.store = store
        self.home = home
        self.hostname = hostname  # this manager's host: the tasks whose log file is here

    def read(self, task: Task, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes of the task's log from byte ``offset`` (none
        past its end, or while it has none)."""
        path = self.home.task_log(task.id)
        if not self.store.shared or (task.host == self.hostname and path.exists()):
            return read_file(path, offset, size)
        stored = self.store.read_log(task.id, offset, size)
        if stored.size == 0:  # nothing shipped: a remote executor's task may have reported here
            return read_file(path, offset, size)
        return stored.data


def read_file(path: os.PathLike[str], offset: int, size: int) -> bytes:
    """Up to ``size`` bytes of a log file from ``offset``; none while there is no file yet.

    A log path that is a folder is a state the task's files are in (409);
    any other failure to read (permissions, I/O) is the disk's (503)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(size)
    except FileNotFoundError:
        return b""
    except IsADirectoryError:
        raise Conflict(f"cannot read the task's log: {os.fspath(path)} is a folder", field="log") from None
    except OSError as exc:
        raise StoreError(f"cannot read the task's log {os.fspath(path)}: {exc.strerror or exc}", field="log") from None
