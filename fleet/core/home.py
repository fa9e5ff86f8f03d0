"""The layout of ``FLEET_HOME``: the database, logs, run files and caches.

Everything fleet writes under the home is created owner-only (0700 folders,
0600 files): it holds task logs, environments and, in config, secrets.  A
home or log folder that already exists writable by group or others is
tightened to 0700 when a manager starts (:meth:`Home.tighten`).  Tasks are
not fleet's files: they run with :data:`TASK_UMASK`, as from a login shell.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.core.validate import task_id as check_task_id


def resolve_home(configured: str = "", env: Mapping[str, str] | None = None) -> Path:
    """FLEET_HOME, else ``fleet.core.home`` from the config, else ``~/.fleet``."""
    env = os.environ if env is None else env
    raw = env.get("FLEET_HOME") or configured or "~/.fleet"
    return Path(raw).expanduser().absolute()


# The umask a task runs with (fleet's own processes keep 0077).  A fixed 0022,
# the login default of Debian and Ubuntu, rather than the submitter's: a task
# may be cloned, retried or enqueued from the page by someone else, and the
# files it leaves should not depend on who clicked.
TASK_UMASK = 0o022


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def db(self) -> Path:
        return self.root / "fleet.db"

    @property
    def manager_json(self) -> Path:
        return self.root / "manager.json"

    @property
    def manager_lock(self) -> Path:
        return self.root / "manager.lock"

    @property
    def manager_pid(self) -> Path:
        """``manager.pid``: the running manager's pid and start time, for workers
        that wait for a hand-over (see :mod:`fleet.manager.daemon`)."""
        return self.root / "manager.pid"

    @property
    def api_token(self) -> Path:
        """The API token the manager made (or was given); see fleet/api/auth.py."""
        return self.root / "api.token"

    @property
    def api_sock(self) -> Path:
        """The API's unix socket: the caller is who the kernel says it is."""
        return self.root / "api.sock"

    def read_api_token(self) -> str:
        """The token in ``api.token``; "" when there is none or it cannot be read."""
        try:
            return self.api_token.read_text().strip()
        except OSError:
            return ""

    @property
    def manager_log(self) -> Path:
        return self.root / "logs" / "manager.log"

    @property
    def task_logs(self) -> Path:
        return self.root / "logs" / "tasks"

    @property
    def worker_logs(self) -> Path:
        return self.root / "logs" / "workers"

    @property
    def work(self) -> Path:
        return self.root / "work"

    def task_log(self, task_id: str) -> Path:
        return self.task_logs / f"{check_task_id(task_id)}.log"

    def worker_log(self, worker_id: str) -> Path:
        safe = worker_id.replace(":", "_").replace(",", "-").replace("/", "_")
        return self.worker_logs / f"{safe}.log"

    def ensure(self) -> Home:
        os.umask(0o077)
        for folder in (self.root, self.task_logs, self.worker_logs, self.work):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    def tighten(self) -> list[tuple[Path, int]]:
        """Make the home and its log folders owner-only (0700) where group or
        others may write to them; return each folder changed with its old mode."""
        changed: list[tuple[Path, int]] = []
        for folder in (self.root, self.root / "logs", self.task_logs, self.worker_logs, self.work, self.root / "run"):
            try:
                st = os.lstat(folder)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o022:
                os.chmod(folder, 0o700)
                changed.append((folder, stat.S_IMODE(st.st_mode)))
        return changed

    def read_manager_info(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.manager_json.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_manager_info(self, info: dict[str, Any]) -> None:
        tmp = self.manager_json.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
        os.replace(tmp, self.manager_json)


def manager_pidfile(home: Home) -> Path:
    """:attr:`Home.manager_pid` (what a worker watches for its manager)."""
    return home.manager_pid
