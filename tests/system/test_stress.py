"""Stress: 8 static workers pull 500 tasks each (4,000 in all) from one queue;
every task runs exactly once, as its own record of running shows."""

from __future__ import annotations

import collections
import time
from pathlib import Path

from tests.conftest import Fleet

WORKERS = 8
TASKS = WORKERS * 500


def test_every_task_runs_exactly_once(fleet: Fleet, tmp_path: Path) -> None:
    for gpu in range(WORKERS):
        fleet.up("--gpus", str(gpu), "--queue", "stress", "--create-queue")
    runs = tmp_path / "runs"
    # O_APPEND writes of one short line are atomic, so concurrent tasks never interleave.
    command = ["sh", "-c", f'echo "$FLEET_TASK_ID $FLEET_WORKER_ID" >> {runs}']
    ids: list[str] = []
    with fleet.api() as api:
        for _ in range(TASKS):
            body = {"command": command, "working_dir": str(tmp_path), "queue": "stress"}
            ids.append(api.post("/tasks", json=body).raise_for_status().json()["id"])

        deadline = time.monotonic() + 900
        while True:
            left = api.get("/tasks", params={"queue": "stress", "status": "queued,in_progress", "limit": 1}).json()
            if left["total"] == 0:
                break
            assert time.monotonic() < deadline, f"{left['total']} tasks still pending"
            time.sleep(0.5)
        done = api.get("/tasks", params={"queue": "stress", "limit": 10_000}).json()

    assert done["total"] == TASKS
    statuses = collections.Counter(t["status"] for t in done["tasks"])
    assert statuses == {"completed": TASKS}
    assert all(t["attempt"] == 1 for t in done["tasks"])

    lines = runs.read_text().splitlines()
    counts = collections.Counter(line.split()[0] for line in lines)
    assert len(lines) == TASKS
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1
    per_worker = collections.Counter(line.split()[1] for line in lines)
    assert len(per_worker) == WORKERS  # every worker took part
    recorded = {t["id"]: t["worker"] for t in done["tasks"]}
    assert all(recorded[tid] == wid for tid, wid in (line.split() for line in lines))
