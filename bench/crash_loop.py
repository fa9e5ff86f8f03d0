"""Crash loop: the manager is killed with SIGKILL 20 times during a stream of tasks.

Two static workers pull from one queue.  Each round submits a batch of short
tasks (each appends its own id to a file when it runs), kills the manager at
once, and starts it again with ``fleetctl up`` (which adopts the running
workers).  Recovery time is from the kill to the restarted manager answering
with both workers listed.  At the end every task must have completed and run
exactly once: the figures printed are tasks lost (not completed), duplicated
(ran more than once, by their own record) and the recovery times.

Run:  .venv/bin/python -m bench.crash_loop [--rounds 20] [--batch 10]
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import time

import psutil

from bench._common import machine, row, summary, temp_fleet, wait_drained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=10)
    args = parser.parse_args()
    with temp_fleet() as fleet:
        runs = fleet.root / "runs"
        fleet.up("0", "q")
        fleet.up("1", "q")
        command = ["sh", "-c", f'echo "$FLEET_TASK_ID" >> {runs}; sleep 0.05']
        submitted: list[str] = []
        recoveries: list[float] = []
        with fleet.api() as api:
            print(machine(api))
        for _ in range(args.rounds):
            with fleet.api() as api:
                for _ in range(args.batch):
                    body = {"command": command, "working_dir": str(fleet.root), "queue": "q"}
                    submitted.append(api.post("/tasks", json=body).raise_for_status().json()["id"])
                pid = int(api.get("/health").json()["pid"])
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                time.sleep(0.01)
            fleet.up("0", "q")  # a new manager; both workers are adopted, not started again
            fleet.up("1", "q")
            with fleet.api() as api:
                fleet.wait_idle(api, 0)
                assert len(api.get("/workers").json()["workers"]) == 2
            recoveries.append(time.monotonic() - killed)
        with fleet.api() as api:
            wait_drained(api)
            done = api.get("/tasks", params={"limit": 10_000}).json()["tasks"]
        completed = {t["id"] for t in done if t["status"] == "completed"}
        counts = collections.Counter(runs.read_text().split()) if runs.exists() else collections.Counter()
        lost = [t for t in submitted if t not in completed]
        duplicated = [t for t, n in counts.items() if n > 1]
        print(f"{args.rounds} kill -9 rounds, {len(submitted)} tasks through 2 workers")
        print(f"tasks lost (not completed): {len(lost)}; duplicated (ran twice): {len(duplicated)}")
        print(row("recovery", summary(recoveries)))


if __name__ == "__main__":
    main()
