"""Fixtures that start the real thing: a manager, workers and task processes.

Every test gets its own ``FLEET_HOME`` and config file, and the manager binds
port 0.  ``fleetctl`` is run as a subprocess (``python -m fleet.cli``), exactly
as a user runs it.  Teardown stops the manager and checks that nothing that
ran under this home is left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.gitrepo import Repo, isolate, make_repo
from tests.pgserver import PgServer, server_or_skip

# A task object's keys, as SPEC promises them (API answers and --json).
TASK_KEYS = (
    "id",
    "name",
    "queue",
    "status",
    "status_reason",
    "priority",
    "worker",
    "host",
    "gpus",
    "exit_code",
    "attempt",
    "created_at",
    "queued_at",
    "started_at",
    "finished_at",
    "script",
    "requirements",
    "docker",
    "env",
    "env_cached",
)

CONFIG = """
fleet {
  stop_grace_seconds: 2
  poll_interval: 2
}
"""


@dataclass
class Fleet:
    """One test's fleet: its home, its config, and helpers to drive it."""

    root: Path
    env: dict[str, str]
    started: list[str] = field(default_factory=list)
    store_url: str = ""  # a PostgreSQL store shared with other hosts (see ``hosts``); empty: SQLite in the home

    def join(self, store_url: str, worker_name: str) -> None:
        """Make this fleet one host of a fleet on the PostgreSQL store at ``store_url``."""
        self.store_url = store_url
        self.env.update(FLEET_STORE_URL=store_url, FLEET_WORKER_NAME=worker_name)

    @property
    def home(self) -> Path:
        return self.root / "home"

    def cli(
        self, *args: str, cwd: Path | None = None, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fleet.cli", *args],
            cwd=cwd or self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )

    def ok(self, *args: str, cwd: Path | None = None, timeout: float = 120) -> str:
        result = self.cli(*args, cwd=cwd, timeout=timeout)
        assert result.returncode == 0, (
            f"fleetctl {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
        return result.stdout

    def up(self, *args: str) -> str:
        return self.ok("up", "--port", "0", *args)

    def submit(self, queue: str, *command: str, opts: tuple[str, ...] = (), cwd: Path | None = None) -> str:
        return self.ok("submit", "--queue", queue, *opts, "--", *command, cwd=cwd).strip()

    def manager_info(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.home / "manager.json").read_text())
        return data

    @property
    def url(self) -> str:
        return str(self.manager_info()["url"])

    @property
    def token(self) -> str:
        """The API token the manager made (or was given): ``home/api.token``."""
        return (self.home / "api.token").read_text().strip()

    def headers(self) -> dict[str, str]:
        """The credentials of the manager's user, for a request over TCP."""
        return {"Authorization": f"Bearer {self.token}"}

    def api(self, *, prefix: str = "/api/v1", auth: bool = True, **options: Any) -> httpx.Client:
        """A client of the manager over TCP, with the token unless ``auth`` is off;
        ``prefix=""`` for the routes outside /api/v1 (ClearML's, /metrics, the page);
        ``options`` go to ``httpx.Client``."""
        headers = self.headers() if auth else {}
        options.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url + prefix, headers=headers, **options)

    def task(self, task_id: str) -> dict[str, Any]:
        with self.api() as api:
            data: dict[str, Any] = api.get(f"/tasks/{task_id}").raise_for_status().json()
            return data

    def task_row(self, task_id: str) -> dict[str, Any]:
        """The task's row as the store holds it, read from the database (columns no API shows, such as ``pid``)."""
        if self.store_url:
            import psycopg
            from psycopg.rows import dict_row

            with psycopg.connect(self.store_url, row_factory=dict_row) as pg:
                found = pg.execute("SELECT * FROM tasks WHERE id = %s", (task_id,)).fetchone()
                assert found is not None, f"no task {task_id} in {self.store_url}"
                return dict(found)
        conn = sqlite3.connect(self.home / "fleet.db")
        conn.row_factory = sqlite3.Row
        try:
            return dict(conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone())
        finally:
            conn.close()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def processes(self) -> list[psutil.Process]:
        """Processes that belong to this fleet: started with our home in their
        arguments or environment (managers, workers and tasks)."""
        mine = []
        marker = str(self.home)
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if proc.pid == os.getpid():
                    continue
                cmdline = " ".join(proc.info["cmdline"] or [])
                if marker in cmdline or proc.environ().get("FLEET_HOME") == marker:
                    if proc.status() != psutil.STATUS_ZOMBIE:
                        mine.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return mine


def _write_config(path: Path, text: str) -> None:
    path.write_text(text)


@contextlib.contextmanager
def fleet_at(root: Path) -> Iterator[Fleet]:
    """A fleet whose home is ``root/home``; stopped, and checked for leftovers, at the end."""
    config = root / "fleet.conf"
    _write_config(config, CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "CLEARML_"))}
    env.update(FLEET_HOME=str(root / "home"), FLEET_CONFIG_FILE=str(config), HOME=str(root))
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    f = Fleet(root=root, env=env)
    yield f
    if (f.home / "manager.json").exists():
        f.cli("stop", "--timeout", "30")
    leftovers = f.processes()
    for proc in leftovers:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    assert not leftovers, f"processes left running: {[p.info['cmdline'] for p in leftovers]}"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with fleet_at(tmp_path) as f:
        yield f


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL server for the whole session (skipped, saying why, where there is none)."""
    with server_or_skip() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh database on ``pg_server``, dropped at the end."""
    name = pg_server.create_database()
    yield pg_server.url(name)
    pg_server.drop_database(name)


@pytest.fixture
def hosts(tmp_path: Path, pg_url: str) -> Iterator[list[Fleet]]:
    """Three hosts of one fleet on this machine: each its own home, config and
    manager, worker names ``host0``..``host2``, one PostgreSQL store.  Start a
    host with ``hosts[i].up(...)``; each is stopped and checked for leftovers."""
    with contextlib.ExitStack() as stack:
        yield fleet_hosts(stack, tmp_path, pg_url, 3)


def fleet_hosts(
    stack: contextlib.ExitStack, tmp_path: Path, store_url: str, count: int, config: str = ""
) -> list[Fleet]:
    """``count`` hosts of one fleet on the PostgreSQL store at ``store_url``: homes
    under ``tmp_path/host0``.., worker names ``host0``..; ``config`` is added to
    each host's config file.  Each is stopped and checked when ``stack`` closes."""
    fleets = []
    for i in range(count):
        root = tmp_path / f"host{i}"
        root.mkdir()
        host = stack.enter_context(fleet_at(root))
        if config:
            (root / "fleet.conf").write_text((root / "fleet.conf").read_text() + "\n" + config + "\n")
        host.join(store_url, f"host{i}")
        fleets.append(host)
    return fleets


@pytest.fixture
def git_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Git runs without the machine's configuration (for the code under test too)."""
    isolate(monkeypatch)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """A remote and a pushed clone in the test's temp folder (tests/gitrepo.py)."""
    return make_repo(tmp_path)


def alive(pid: int) -> bool:
    """True when ``pid`` runs (a zombie waiting for init to reap it is not running)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
