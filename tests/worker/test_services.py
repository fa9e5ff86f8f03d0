"""Services mode end to end: launch each task and go on pulling, up to MAX at once."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from tests.conftest import Fleet
from tests.taskview import VIEW, views_of

HOST = socket.gethostname()


def test_services_mode_runs_at_most_max_at_once(fleet: Fleet, tmp_path: Path) -> None:
    # All five wait in the queue before the services worker starts, so that how long each
    # `submit` takes on a loaded machine cannot decide whether two of them overlap.
    fleet.up("--cpu-only", "--queue", "elsewhere", "--create-queue")
    fleet.ok("queue", "create", "services")
    views = tmp_path / "views"
    tasks = [fleet.submit("services", "python", "-c", VIEW, str(views), "0.8") for _ in range(5)]
    fleet.up("--services-mode", "2", "--queue", "services")
    assert fleet.cli("wait", *tasks, "--timeout", "60").returncode == 0
    seen = views_of(views)
    assert set(seen) == set(tasks)
    edges = sorted([(v["start"], 1) for v in seen.values()] + [(v["end"], -1) for v in seen.values()])
    running, most = 0, 0
    for _, step in edges:
        running += step
        most = max(most, running)
    assert most == 2  # never more than MAX, and it did run two side by side
    for task_id in tasks:
        task = fleet.task(task_id)
        assert task["worker"] == f"{HOST}:service:{task_id}" and task["gpus"] == []
        assert seen[task_id]["gpus"] == []  # CPU-only: CUDA_VISIBLE_DEVICES is empty
    (worker,) = [w for w in json.loads(fleet.ok("status", "--json"))["workers"] if w["mode"] == "services"]
    assert (worker["id"], worker["mode"], worker["services_max"], worker["gpus"]) == (
        f"{HOST}:services",
        "services",
        2,
        [],
    )


def test_services_without_max_all_run_and_stop_like_any_task(fleet: Fleet) -> None:
    fleet.up("--services-mode", "--queue", "services", "--create-queue")
    tasks = [fleet.submit("services", "sleep", "300") for _ in range(3)]
    fleet.wait_for(lambda: all(fleet.task(t)["status"] == "in_progress" for t in tasks), what="all three running")
    with fleet.api() as api:
        worker = api.get(f"/workers/{HOST}:services").json()
    assert sorted(worker["tasks"]) == sorted(tasks) and worker["state"] == "busy"
    with fleet.api() as api:  # the services worker's per-task ids count as its own
        listed = api.get("/tasks", params={"worker": f"{HOST}:services"}).json()["tasks"]
    assert sorted(t["id"] for t in listed) == sorted(tasks)
    fleet.ok("abort", tasks[0])
    fleet.wait_for(lambda: fleet.task(tasks[0])["status"] == "stopped", timeout=10, what="aborted")
    assert fleet.cli("stop", "--timeout", "30").returncode == 0
    assert fleet.processes() == []
    import sqlite3

    conn = sqlite3.connect(fleet.home / "fleet.db")
    try:
        statuses = [conn.execute("SELECT status FROM tasks WHERE id = ?", (t,)).fetchone()[0] for t in tasks]
    finally:
        conn.close()
    assert statuses == ["stopped"] * 3
