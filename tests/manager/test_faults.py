"""Task-side and store faults, injected for real.

A task that daemonizes out of its process group (double fork and
``setsid``) is still contained: the worker is a child subreaper, so the
daemon re-parents to it, and it is killed once the task's group is gone,
after a normal end and after an abort.

Store faults: a reader that holds a read transaction open in another process
(WAL: writers go on) fails nothing; a corrupt database is refused at start
with one clear line and a non-zero exit, and left byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CONFIG, Fleet, alive
from tests.threads import at_once

DAEMON = """
import os, sys, time
pidfile = sys.argv[1]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        with open(pidfile + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(pidfile + ".tmp", pidfile)
        time.sleep(300)
        os._exit(0)
    os._exit(0)
while not os.path.exists(pidfile):
    time.sleep(0.01)
print("daemon started", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _daemon_task(fleet: Fleet, tmp_path: Path, name: str, main_seconds: float) -> tuple[str, Path]:
    script = tmp_path / f"{name}.py"
    script.write_text(DAEMON)
    pidfile = tmp_path / f"{name}.pid"
    task_id = fleet.submit("q", "python", str(script), str(pidfile), str(main_seconds))
    return task_id, pidfile


def test_daemon_left_by_a_task_is_killed_when_it_ends(fleet: Fleet, tmp_path: Path) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    task_id, pidfile = _daemon_task(fleet, tmp_path, "ends", 0)
    assert fleet.cli("wait", task_id).returncode == 0
    daemon = int(pidfile.read_text())
    task = fleet.task(task_id)
    assert task["status"] == "completed", task
    assert not alive(daemon)
    assert "outside its process group" in fleet.ok("logs", task_id)
    # the worker goes on with the next task
    assert fleet.cli("wait", fleet.submit("q", "true")).returncode == 0


def test_daemon_left_by_a_task_is_killed_on_abort(fleet: Fleet, tmp_path: Path) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    task_id, pidfile = _daemon_task(fleet, tmp_path, "abort", 300)
    fleet.wait_for(pidfile.exists, what="daemon started")
    daemon = int(pidfile.read_text())
    assert alive(daemon)
    assert fleet.cli("abort", task_id).returncode == 0
    fleet.wait_for(lambda: fleet.task(task_id)["status"] == "stopped", timeout=15, what="stopped")
    deadline = time.monotonic() + 2
    while alive(daemon) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(daemon)


HOLD_READ = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN")
conn.execute("SELECT count(*) FROM tasks").fetchone()
print("holding", flush=True)
time.sleep(120)
"""


def test_long_reader_fails_nothing(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    reader = subprocess.Popen(
        [sys.executable, "-c", HOLD_READ, str(fleet.home / "fleet.db")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "holding"
        ids = [fleet.submit("q", "python", "-c", f"print({i})") for i in range(12)]
        assert fleet.cli("wait", *ids, timeout=120).returncode == 0
        assert reader.poll() is None  # the read transaction was open all along
        assert {fleet.task(t)["status"] for t in ids} == {"completed"}
    finally:
        reader.kill()
        reader.wait()
        if reader.stdout is not None:
            reader.stdout.close()


def test_corrupt_database_is_refused_and_left_untouched(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    fleet.ok("stop")
    db = fleet.home / "fleet.db"
    data = bytearray(db.read_bytes())
    for page in range(4096, len(data) - 64, 4096):  # keep the header: SQLite, but broken pages
        data[page + 8 : page + 64] = b"\xff" * 56
    db.write_bytes(bytes(data))
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    result = fleet.cli("up", "--port", "0", "--gpus", "0", "--queue", "q")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("fleetctl:")]
    assert len(lines) == 1, result.stderr
    assert "is not a usable fleet database" in lines[0] and "left untouched" in lines[0]
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert not (fleet.home / "manager.json").exists()
    assert fleet.processes() == []


def test_load_50_clients_lose_nothing(fleet: Fleet) -> None:
    """50 concurrent API clients submit and list for 30 s against 8 static workers:
    no error, every accepted submission is in the store; p99 is printed."""
    import threading

    import httpx

    for gpu in range(8):
        fleet.up("--gpus", str(gpu), "--queue", "q", "--create-queue")
    end = time.monotonic() + 30
    latencies: list[float] = []
    errors: list[str] = []
    submitted: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        mine: list[float] = []
        ids: list[str] = []
        with fleet.api() as api:
            turn = 0
            while time.monotonic() < end:
                started = time.monotonic()
                try:
                    if turn % 2 == 0:
                        answer = api.post("/tasks", json={"command": ["true"], "working_dir": "/", "queue": "q"})
                        if answer.status_code == 201:
                            ids.append(answer.json()["id"])
                    else:
                        answer = api.get("/tasks", params={"limit": 20})
                    if answer.status_code >= 300:
                        errors.append(f"{answer.status_code} {answer.text[:200]}")
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                mine.append(time.monotonic() - started)
                turn += 1
        with lock:
            latencies.extend(mine)
            submitted.extend(ids)

    at_once(client, 50)
    assert not errors, errors[:5]
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[int(len(latencies) * 0.99)]
    print(
        f"\nload: {len(latencies)} requests, {len(submitted)} submissions, p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    )
    assert len(set(submitted)) == len(submitted) > 0
    with fleet.api() as api:
        found: set[str] = set()
        offset = 0
        while True:
            page = api.get("/tasks", params={"limit": 1000, "offset": offset}).raise_for_status().json()
            items = page["tasks"] if isinstance(page, dict) else page
            found |= {t["id"] for t in items}
            if len(items) < 1000:
                break
            offset += 1000
    assert set(submitted) <= found


@pytest.mark.parametrize(
    "up", [("--cpu-only", "--queue", "q"), ("--gpus", "0-1", "--queue", "q=1")], ids=["static", "pool"]
)
def test_disk_nearly_full_leaves_env_tasks_queued(fleet: Fleet, up: tuple[str, ...]) -> None:
    """Below ``free_space_threshold_gb`` no environment is built: the task goes back to
    the head of its queue with the reason, and the worker (a static one, or a dynamic
    pool) pulls nothing for a while: one attempt, not a claim loop.  The threshold is
    set above this disk's real free space (the check reads free space in one
    function, fleet.worker.prepare.check_space)."""
    (fleet.root / "fleet.conf").write_text(
        CONFIG + "agent { venvs_cache { free_space_threshold_gb: 1000000 }, package_manager { type: pip } }\n"
    )
    fleet.up(*up, "--create-queue")
    body = {
        "command": ["python", "-c", "print(1)"],
        "working_dir": str(fleet.root),
        "queue": "q",
        "requirements": {"packages": ["six"]},
    }
    with fleet.api() as api:
        task_id = api.post("/tasks", json=body).raise_for_status().json()["id"]

        def requeued() -> bool:
            task = api.get(f"/tasks/{task_id}").json()
            return bool(task["status"] == "queued" and task["attempt"] >= 1)

        fleet.wait_for(requeued, timeout=60, what="requeued for lack of space")
        task = api.get(f"/tasks/{task_id}").json()
        assert "disk space" in task["status_reason"] and "free_space_threshold_gb" in task["status_reason"]

        def backing_off() -> bool:
            worker = api.get("/workers").json()["workers"][0]
            return bool(worker["state_reason"] == "not pulling: " + task["status_reason"].split(": ", 1)[1])

        fleet.wait_for(backing_off, timeout=10, what="the worker to say why it does not pull")
        time.sleep(2)  # backing off: the task is not claimed again meanwhile
        assert api.get(f"/tasks/{task_id}").json()["attempt"] == 1
    assert not any((fleet.home / "venvs-cache").glob("*.ready"))  # nothing was built
    assert not (fleet.home / "venvs-builds").exists() or not any((fleet.home / "venvs-builds").iterdir())


def test_a_task_flooding_its_log_is_capped(fleet: Fleet) -> None:
    """A task writing as fast as it can (well over 100 MB/s here) is capped at
    ``fleet.log_max_mb`` with one note; the task itself runs on, unharmed."""
    (fleet.root / "fleet.conf").write_text(CONFIG + "fleet { log_max_mb: 2 }\n")
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    flood = "import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range(300_000):\n    sys.stdout.write(line)\nprint('end')"
    task_id = fleet.submit("q", "python", "-c", flood)  # about 300 MB of output
    assert fleet.cli("wait", task_id, "--timeout", "120").returncode == 0
    log = fleet.home / "logs" / "tasks" / f"{task_id}.log"
    size = log.stat().st_size
    assert size < 2.2 * 1024 * 1024, size
    text = log.read_text(errors="replace")
    assert text.count("log limit of 2 MB reached") == 1
    assert "attempt 1 ended: completed" in text  # fleet's own notes are never capped


def test_a_task_that_died_while_nobody_watched_is_failed_and_retried(fleet: Fleet) -> None:
    """The manager is killed, then the worker and its task die while no manager
    runs: the next manager marks the task failed with the reason and, since it
    has a retry left, queues it again; it then runs to completion."""
    import os
    import signal

    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    task_id = fleet.submit("q", "sleep", "300", opts=("--retries", "1"))
    fleet.wait_for(lambda: fleet.task(task_id)["status"] == "in_progress", what="start")
    fleet.wait_for(lambda: bool(fleet.task_row(task_id)["pid"]), what="task process recorded")
    task_pid = int(fleet.task_row(task_id)["pid"])
    manager_pid = fleet.manager_info()["pid"]
    worker_pid = next(p.pid for p in fleet.processes() if "fleet.worker" in " ".join(p.cmdline()))
    for pid in (manager_pid, worker_pid, task_pid):
        os.kill(pid, signal.SIGKILL)
    fleet.wait_for(lambda: not any(alive(p) for p in (manager_pid, worker_pid, task_pid)), what="all gone")
    fleet.up("--gpus", "0", "--queue", "q")
    fleet.wait_for(lambda: fleet.task(task_id)["attempt"] == 2, timeout=30, what="the retry")
    first = fleet.task(task_id)["attempts"][0]
    assert first["status"] == "failed" and "worker died" in first["reason"]
    fleet.ok("abort", task_id)


def test_files_under_the_home_are_owner_only(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    task_id = fleet.submit("q", "echo", "hello")
    assert fleet.cli("wait", task_id).returncode == 0
    loose = [
        f"{path} {oct(path.stat().st_mode & 0o777)}"
        for path in [fleet.home, *fleet.home.rglob("*")]
        if not path.is_symlink() and path.stat().st_mode & 0o077
    ]
    assert loose == []
