"""No task outlives its GPUs: a worker killed at any moment takes all of its
task with it, and the GPU's next task starts only once none of it is left.

The tasks here report on themselves: a long task tags every process it makes
with a token in its argv (a child that calls ``setsid`` included), and the
GPU's next task exits 1 if any process with that token still exists when it
starts.  So the order of "old task gone" and "GPU handed on" is judged by the
tasks, not by fleet's own records.  Each test runs with cgroups (root here)
and with ``fleet.cgroups: false`` (the environment marker alone).
"""

from __future__ import annotations

import functools
import os
import random
import signal
import socket
import sqlite3
import sys
import time
import uuid
from typing import Any

import psutil
import pytest

from fleet.core.contain import Attempt
from tests.conftest import CONFIG, Fleet, alive

HOST = socket.gethostname()

# Leaves its process group and session at once (setsid), then sleeps; argv[1] is the token.
LONG = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    time.sleep(300)
    os._exit(0)
time.sleep(300)
"""

# Exit 1 if any process of the previous task (argv[1], its token) still exists.
CHECK = """
import os, sys
token = sys.argv[1].encode()
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == os.getpid():  # this check carries the token too
        continue
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\\0")
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rpartition(")")[2].split()[0]
    except OSError:
        continue
    if token in argv and b"fleet.cli" not in argv and state != "Z":  # not the submit of this check
        print("still running:", pid, argv, state, flush=True)
        sys.exit(1)
"""


@pytest.fixture(params=["cgroups", "marker"])
def mode(request: pytest.FixtureRequest, fleet: Fleet) -> str:
    if request.param == "marker":
        (fleet.root / "fleet.conf").write_text(CONFIG + "fleet { cgroups: false }\n")
    return str(request.param)


def _survivors(token: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            argv = proc.info["cmdline"] or []
            if token in argv and "fleet.cli" not in argv and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def _db(fleet: Fleet, sql: str, *args: Any) -> list[dict[str, Any]]:
    conn = sqlite3.connect(fleet.home / "fleet.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


def _status(fleet: Fleet, task_id: str) -> str:
    return str(_db(fleet, "SELECT status FROM tasks WHERE id = ?", task_id)[0]["status"])


def _worker(fleet: Fleet, worker_id: str) -> dict[str, Any]:
    with fleet.api() as api:
        data: dict[str, Any] = api.get(f"/workers/{worker_id}").raise_for_status().json()
        return data


def test_a_child_that_called_setsid_dies_with_its_killed_worker(fleet: Fleet, mode: str) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    token = f"tok-{uuid.uuid4().hex}"
    task_id = fleet.submit("q", sys.executable, "-c", LONG, token)
    fleet.wait_for(lambda: len(_survivors(token)) == 2, what="the task and its setsid child")
    pids = _survivors(token)
    assert len({os.getsid(p) for p in pids}) == 2  # the child left the task's session
    worker = _worker(fleet, f"{HOST}:gpu0")

    os.kill(worker["pid"], signal.SIGKILL)
    fleet.wait_for(lambda: fleet.task(task_id)["status"] == "failed", timeout=15, what="task failed")
    assert not any(alive(p) for p in pids)  # gone before the task was recorded failed
    assert fleet.task(task_id)["status_reason"] == "worker died"
    check = fleet.submit("q", sys.executable, "-c", CHECK, token)
    assert fleet.cli("wait", check, "--timeout", "60").returncode == 0, fleet.ok("logs", check)
    cgroup = Attempt(fleet.home, task_id, 1).cgroup
    assert cgroup is None or not cgroup.exists()  # removed once empty


def _kill_and_check(fleet: Fleet, queue: str, task_id: str, token: str, pid: int) -> None:
    """``kill -9`` of ``pid`` (the task's worker): the task ends ``failed``
    with nothing of it left, and the queue's next task, on the same GPU,
    finds nothing of it either."""
    os.kill(pid, signal.SIGKILL)
    fleet.wait_for(functools.partial(_is, fleet, task_id, "failed"), timeout=15, what="task failed")
    assert _survivors(token) == []
    check = fleet.submit(queue, sys.executable, "-c", CHECK, token)
    assert fleet.cli("wait", check, "--timeout", "60").returncode == 0, fleet.ok("logs", check)


def _is(fleet: Fleet, task_id: str, status: str) -> bool:
    return _status(fleet, task_id) == status


def _task_worker(task_id: str) -> int | None:
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        if "--task" in argv and task_id in argv:
            return int(proc.pid)
    return None


def _has_task_worker(task_id: str) -> bool:
    return _task_worker(task_id) is not None


def _started(token: str) -> bool:
    return bool(_survivors(token))


def test_kill9_at_random_moments_after_the_claim_leaves_nothing(fleet: Fleet, mode: str) -> None:
    """Kill the worker at random moments from the claim on, the pid write
    included; each time no process of the task survives and the GPU's next
    task sees none of it.  (A static worker is restarted with backoff, so
    four rounds.)"""
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    rng = random.Random(12)
    for _ in range(4):
        fleet.wait_for(lambda: _worker(fleet, f"{HOST}:gpu0")["state"] == "idle", timeout=30, what="worker idle")
        worker_pid = _worker(fleet, f"{HOST}:gpu0")["pid"]
        token = f"tok-{uuid.uuid4().hex}"
        task_id = fleet.submit("q", sys.executable, "-c", LONG, token)
        fleet.wait_for(functools.partial(_is, fleet, task_id, "in_progress"), what="claimed")
        time.sleep(rng.choice([0.0, 0.0, 0.005, 0.02, 0.1]))
        _kill_and_check(fleet, "q", task_id, token, worker_pid)


def test_a_pools_task_worker_killed_before_it_wrote_the_pid(fleet: Fleet, mode: str) -> None:
    """A pool's per-task worker takes a few hundred ms to start after the claim:
    a real window in which the task's pid is not written yet."""
    fleet.up("--gpus", "0", "--queue", "one=1", "--create-queue")
    killed_before_pid = 0
    for round_ in range(3):
        token = f"tok-{uuid.uuid4().hex}"
        task_id = fleet.submit("one", sys.executable, "-c", LONG, token)
        fleet.wait_for(functools.partial(_has_task_worker, task_id), what="the task's worker")
        pid = _task_worker(task_id)
        assert pid is not None
        if round_ > 0:  # let it get as far as starting the task
            fleet.wait_for(functools.partial(_started, token), what="task started")
        if not _db(fleet, "SELECT pid FROM tasks WHERE id = ?", task_id)[0]["pid"]:
            killed_before_pid += 1
        _kill_and_check(fleet, "one", task_id, token, pid)
    assert killed_before_pid >= 1
