"""Dispatch latency: from enqueue to the first line of the task's own code.

One manager with one idle static worker (``--gpus 0``).  N times, one after
another (the next is submitted only once the previous has ended, so the
worker is idle): take ``t0 = time.time()`` just before ``POST /tasks`` of
``[python, -c, "import time; print(time.time(), flush=True)"]``; the latency is
the time the task prints minus ``t0``, read from the task's log after it ends.

Baseline, in the same run: the same command started N times with a bare
``subprocess.Popen`` (stdout=PIPE); latency = printed time - time before Popen.
The difference is fleet's overhead (API, store, wake-up, claim, spawn).

Run:  .venv/bin/python -m bench.dispatch [--tasks 200] [--warmup 3]
"""

from __future__ import annotations

import argparse
import subprocess
import time

import httpx

from bench._common import PYTHON, TempFleet, machine, row, summary, temp_fleet

COMMAND = [PYTHON, "-c", "import time; print(time.time(), flush=True)"]


def bare_popen() -> float:
    t0 = time.time()
    proc = subprocess.Popen(COMMAND, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    out, _ = proc.communicate()
    return float(out.split()[0]) - t0


def through_fleet(fleet: TempFleet, api: httpx.Client) -> float:
    t0 = time.time()
    task = api.post("/tasks", json={"command": COMMAND, "working_dir": str(fleet.root), "queue": "q"})
    task_id = task.raise_for_status().json()["id"]
    # follow=true streams the log and returns once the task has ended
    with api.stream("GET", f"/tasks/{task_id}/log", params={"follow": True}) as answer:
        log = answer.raise_for_status().read().decode()
    status = api.get(f"/tasks/{task_id}").raise_for_status().json()["status"]
    if status != "completed":
        raise RuntimeError(f"task {task_id} ended {status}:\n{log}")
    for line in log.splitlines():
        _, _, text = line.partition(" ")
        if not text.startswith("[fleet]"):
            return float(text) - t0
    raise RuntimeError(f"task {task_id} printed nothing:\n{log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200, help="measured tasks per side (default 200)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured runs first (default 3)")
    args = parser.parse_args()

    bare = [bare_popen() for _ in range(args.warmup + args.tasks)][args.warmup :]
    with temp_fleet() as fleet:
        fleet.up("0", "q")
        with fleet.api() as api:
            fleet.wait_idle(api, 1)
            print(machine(api))
            fleet_s = [through_fleet(fleet, api) for _ in range(args.warmup + args.tasks)][args.warmup :]

    print(f"enqueue -> first line of task code, {args.tasks} sequential tasks, 1 idle worker")
    bare_stats, fleet_stats = summary(bare), summary(fleet_s)
    print(row("bare Popen", bare_stats))
    print(row("fleet", fleet_stats))
    overhead = {k: fleet_stats[k] - bare_stats[k] for k in ("p50", "p99")}
    print(row("fleet overhead", overhead))


if __name__ == "__main__":
    main()
