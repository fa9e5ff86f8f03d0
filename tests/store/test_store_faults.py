"""Store and disk faults are states, not crashes.

Reproduced for real: the home on a small tmpfs filled up by a filler file
and by a task's own output, and a database file made read-only with
``chattr +i`` (root ignores file modes; the immutable flag it does not).
Needs root (mount, chattr); skipped without it.

What is held: the API answers 503 naming the cause; the manager and the
workers (static and pool) keep their pids through the episode; a task whose
log cannot be written is stopped and recorded ``failed`` with that reason
once the store takes writes again; afterwards a new task completes, every
task queued before is still queued, none is lost or duplicated, and
``PRAGMA integrity_check`` is ok.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.disk_faults import CHATTY, fill
from fleet.core.errors import StoreUnavailable
from fleet.core.models import Script, TaskSpec
from fleet.core.tasklog import TaskLog
from fleet.store.faults import QUIET_S, Backoff, Outage
from fleet.store.sqlite import SQLiteStore
from tests.conftest import Fleet, alive


def make_spec(pad: int = 0) -> TaskSpec:
    return TaskSpec(Script(command=["true"], working_dir="/"), env={"PAD": "x" * pad} if pad else {})


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 20 MB tmpfs at ``tmp_path/disk`` (unmounted at the end)."""
    where = tmp_path / "disk"
    where.mkdir(mode=0o700)
    if os.geteuid() != 0 or _run("mount", "-t", "tmpfs", "-o", "size=20m,mode=0700", "tmpfs", str(where)).returncode:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield where
    finally:
        if _run("umount", str(where)).returncode:
            _run("umount", "-l", str(where))


# -- the store alone ---------------------------------------------------------------------


def test_a_full_disk_is_store_unavailable_and_changes_nothing(small_disk: Path) -> None:
    store = SQLiteStore(small_disk / "fleet.db")
    store.create_queue("q", [], "test")
    before = store.create_task(make_spec(), "q", "test")
    filler = fill(small_disk)
    with pytest.raises(StoreUnavailable, match="store unavailable: disk full") as raised:
        for _ in range(10_000):  # until the WAL needs a page the disk does not have
            store.create_task(make_spec(pad=4000), "q", "test")
    assert raised.value.http_status == 503 and raised.value.exit_code == 1
    assert store.get_task(before.id).id == before.id  # reads go on
    filler.unlink()
    after = store.create_task(make_spec(), "q", "test")  # the same store object, no reopening
    tasks, total = store.list_tasks(limit=100_000)
    assert after.id in {t.id for t in tasks} and total == len({t.id for t in tasks})
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.close()


def test_a_read_only_database_opens_and_answers_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db"
    writer = SQLiteStore(path)  # keeps the WAL and its index there, as a running fleet does
    writer.create_queue("q", [], "test")
    if os.geteuid() != 0 or _run("chattr", "+i", str(path)).returncode:
        pytest.skip("needs root and chattr to make the database read-only")
    try:
        store = SQLiteStore(path)  # a start on a read-only database is not refused
        assert [q.name for q in store.list_queues()] == ["q"]
        with pytest.raises(StoreUnavailable, match="store unavailable: database is read-only"):
            store.create_task(make_spec(), "q", "test")
    finally:
        _run("chattr", "-i", str(path))
    store.create_task(make_spec(), "q", "test")  # writable again: the same object writes
    assert store.get_queue("q").pending == 1
    store.close()
    writer.close()


def test_a_task_log_on_a_full_disk_keeps_why_and_never_raises(small_disk: Path) -> None:
    task_log = TaskLog(small_disk / "task.log", max_bytes=1 << 30)
    fill(small_disk, leave=64 * 1024)
    for _ in range(200):
        task_log.feed(b"x" * 1023 + b"\n")
    assert task_log.error == "log cannot be written: No space left on device"
    size = task_log.size
    task_log.feed(b"more\n")
    task_log.note("a note")
    task_log.close()
    assert task_log.size == size == (small_disk / "task.log").stat().st_size  # what is on disk, partial writes included


def test_an_outage_is_logged_once_and_its_end_once(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    now = [100.0]
    outage = Outage(tmp_path / "fleet.db", clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="fleet.store.faults")
    for _ in range(50):
        outage.failed(StoreUnavailable("disk full"))
        now[0] += 0.5
        outage.wrote()  # writes that land in between (a WAL with room) do not end it early
    assert outage.down
    now[0] += QUIET_S
    outage.wrote()
    assert not outage.down
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "store unavailable: disk full; retrying with back-off" in lines[0]
    assert "takes writes again after 35.0s (50 operations failed)" in lines[1]


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    now = [0.0]
    backoff = Backoff(clock=lambda: now[0])
    delays = [backoff.failed() for _ in range(7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert not backoff.ready()
    now[0] += 10.0
    assert backoff.ready()
    backoff.ok()
    assert backoff.failed() == 0.5


# -- a running fleet -----------------------------------------------------------------------


@pytest.fixture
def small_home(fleet: Fleet) -> Iterator[Path]:
    """The fleet's home on a 20 MB tmpfs; the fleet is stopped before it is unmounted."""
    fleet.home.mkdir(mode=0o700)
    if (
        os.geteuid() != 0
        or _run("mount", "-t", "tmpfs", "-o", "size=20m,mode=0700", "tmpfs", str(fleet.home)).returncode
    ):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield fleet.home
    finally:
        (fleet.home / "filler").unlink(missing_ok=True)
        if (fleet.home / "manager.json").exists():
            fleet.cli("stop", "--timeout", "30")
        deadline = time.monotonic() + 30
        while fleet.processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        if _run("umount", str(fleet.home)).returncode:
            _run("umount", "-l", str(fleet.home))


def _fleet_pids(fleet: Fleet) -> set[int]:
    """The manager and its worker processes (not per-task workers, not tasks)."""
    pids = {int(fleet.manager_info()["pid"])}
    for proc in fleet.processes():
        cmd = proc.cmdline()
        if "fleet.worker" in cmd and "--task" not in cmd:
            pids.add(proc.pid)
    return pids


def _db(fleet: Fleet) -> sqlite3.Connection:
    conn = sqlite3.connect(fleet.home / "fleet.db")
    conn.row_factory = sqlite3.Row
    return conn


def _submit_until_unavailable(api: httpx.Client, body: dict[str, Any], created: list[str]) -> dict[str, Any]:
    """POST tasks until the store refuses one; returns that answer (created ids go to ``created``)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = api.post("/tasks", json=body)
        if answer.status_code == 201:
            created.append(answer.json()["id"])
            time.sleep(0.05)
            continue
        assert answer.status_code == 503, answer.text
        data: dict[str, Any] = answer.json()
        return data
    raise AssertionError("the store never became unavailable")


def _held_before(fleet: Fleet) -> list[str]:
    """Tasks queued on a queue no worker serves: they must outlive the episode as they are."""
    with fleet.api() as api:
        api.post("/queues", json={"name": "held"}).raise_for_status()
        body = {"command": ["echo", "held"], "working_dir": str(fleet.root), "queue": "held"}
        return [api.post("/tasks", json=body).raise_for_status().json()["id"] for _ in range(3)]


def _check_nothing_lost(fleet: Fleet, held: list[str], created: list[str]) -> None:
    with _db(fleet) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = {r["id"]: dict(r) for r in conn.execute("SELECT id, status, queue, attempt FROM tasks")}
        events = conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'task' AND old IS NULL").fetchone()[0]
    conn.close()
    assert events == len(rows)  # one creation each: nothing duplicated
    for task_id in held + created:
        assert rows[task_id]["status"] == "queued" and rows[task_id]["attempt"] == 0, rows[task_id]


@pytest.mark.parametrize(
    "up", [("--gpus", "0", "--queue", "q"), ("--gpus", "0-1", "--queue", "q=1")], ids=["static", "pool"]
)
def test_a_full_disk_is_a_state_not_a_crash(fleet: Fleet, small_home: Path, up: tuple[str, ...]) -> None:
    fleet.up(*up, "--create-queue")
    assert fleet.cli("wait", fleet.submit("q", "echo", "before")).returncode == 0
    held = _held_before(fleet)
    pids = _fleet_pids(fleet)
    go = fleet.root / "go"
    chatty = fleet.submit("q", "python", "-c", CHATTY, str(go))
    fleet.wait_for(lambda: _db_pid(fleet, chatty) is not None, what="the chatty task started")
    filler = fill(small_home, leave=1 << 20)
    go.touch()  # its output takes the last megabyte
    body = {"command": ["echo", "x"], "working_dir": str(fleet.root), "queue": "held"}
    created: list[str] = []
    with fleet.api() as api:
        refused = _submit_until_unavailable(api, body, created)
    assert refused["error"].startswith("store unavailable: disk full"), refused
    result = fleet.cli("submit", "--queue", "q", "--", "true")
    assert result.returncode == 1 and "store unavailable: disk full" in result.stderr, result
    task_pid = _db_pid(fleet, chatty)
    fleet.wait_for(lambda: task_pid is None or not alive(task_pid), timeout=30, what="the chatty task stopped")
    time.sleep(6)  # past a heartbeat, a sampler tick and supervision rounds, all failing
    assert all(alive(pid) for pid in pids) and _fleet_pids(fleet) == pids

    filler.unlink()  # space comes back; nobody restarts anything
    fleet.wait_for(lambda: fleet.task(chatty)["status"] == "failed", timeout=60, what="the chatty task recorded")
    task = fleet.task(chatty)
    assert task["status_reason"] == "log cannot be written: No space left on device", task
    assert task["attempt"] == 1
    done = fleet.submit("q", "echo", "after")
    assert fleet.cli("wait", done, "--timeout", "60").returncode == 0
    assert fleet.task(done)["attempt"] == 1
    assert _fleet_pids(fleet) == pids
    _check_nothing_lost(fleet, held, created)


def test_a_read_only_database_is_a_state_not_a_crash(fleet: Fleet) -> None:
    """A manager (re)started on a read-only database serves reads, answers
    writes with 503 and stays up; a worker that dies meanwhile is recorded
    and restarted once the file is writable again."""
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    assert fleet.cli("wait", fleet.submit("q", "echo", "before")).returncode == 0
    held = _held_before(fleet)
    db = fleet.home / "fleet.db"
    old_manager = int(fleet.manager_info()["pid"])
    os.kill(old_manager, 9)
    fleet.wait_for(lambda: not alive(old_manager), what="the manager gone")
    if os.geteuid() != 0 or _run("chattr", "+i", str(db)).returncode:
        pytest.skip("needs root and chattr to make the database read-only")
    try:
        fleet.up("--gpus", "0", "--queue", "q")
        pids = _fleet_pids(fleet)
        manager = int(fleet.manager_info()["pid"])
        with fleet.api() as api:
            answer = api.post("/tasks", json={"command": ["true"], "working_dir": str(fleet.root), "queue": "q"})
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"].startswith("store unavailable: database is read-only")
            listed = api.get("/tasks", params={"queue": "held"}).raise_for_status().json()
            assert {t["id"] for t in listed["tasks"]} == set(held)
        result = fleet.cli("submit", "--queue", "q", "--", "true")
        assert result.returncode == 1 and "store unavailable: database is read-only" in result.stderr
        worker = next(pid for pid in pids if pid != manager)
        os.kill(worker, 9)  # its death cannot be recorded yet
        time.sleep(4)
        assert alive(manager)
    finally:
        _run("chattr", "-i", str(db))
    fleet.wait_for(
        lambda: any(w["restarts"] >= 1 and w["state"] == "idle" for w in _workers(fleet)),
        timeout=60,
        what="the worker recorded and restarted",
    )
    done = fleet.submit("q", "echo", "after")
    assert fleet.cli("wait", done, "--timeout", "60").returncode == 0
    assert int(fleet.manager_info()["pid"]) == manager and alive(manager)
    _check_nothing_lost(fleet, held, [])


def _workers(fleet: Fleet) -> list[dict[str, Any]]:
    with fleet.api() as api:
        workers: list[dict[str, Any]] = api.get("/workers").raise_for_status().json()["workers"]
        return workers


def _db_pid(fleet: Fleet, task_id: str) -> int | None:
    with _db(fleet) as conn:
        row = conn.execute("SELECT pid FROM tasks WHERE id = ?", (task_id,)).fetchone()
    conn.close()
    return None if row is None or row["pid"] is None else int(row["pid"])
