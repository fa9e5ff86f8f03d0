"""Wake-up latency across hosts: enqueue on host A -> started on host B.

Two managers on this machine, each its own ``FLEET_HOME`` and worker name
(``hostA``, ``hostB``), one PostgreSQL store (a throw-away server, as the
tests start: tests/pgserver.py).  hostA's CPU worker serves queue ``local``,
hostB's serves ``remote``; both poll only every 300 s, so every start is a
wake-up's doing.  N times each, taking turns, one task at a time (the next
is submitted once the previous has ended, so the worker is idle):
``t0 = time.time()`` just before hostA's ``POST /tasks`` of ``/bin/true``, and
the latency is the attempt's ``started_at`` in the store (the claim) minus
``t0``.

- ``same host`` (queue ``local``): hostA's service sends hostA's worker a
  datagram after the commit (the path a single host has always had).
- ``other host`` (queue ``remote``): hostA's service announces the wake-up
  (``NOTIFY``); hostB's manager hears it on its listening connection and
  sends hostB's worker the datagram.

Run:  .venv/bin/python -m bench.wake_latency [--tasks 50] [--warmup 3]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import httpx

from bench._common import TempFleet, machine, parse_iso, row, summary, temp_fleet
from tests.pgserver import find_bin, running_server

CONFIG = "fleet {\n  poll_interval: 300\n}\n"


def host(name: str, store_url: str) -> contextlib.AbstractContextManager[TempFleet]:
    """A manager of host ``name`` on the store at ``store_url``; stopped (and checked) on the way out."""
    return temp_fleet(CONFIG, env={"FLEET_STORE_URL": store_url, "FLEET_WORKER_NAME": name})


def until_started(api: httpx.Client, queue: str, cwd: Path) -> float:
    """Submit ``/bin/true`` to ``queue``; seconds from just before the POST to its claim."""
    t0 = time.time()
    task_id = api.post("/tasks", json={"command": ["/bin/true"], "working_dir": str(cwd), "queue": queue})
    task_id = task_id.raise_for_status().json()["id"]
    deadline = time.monotonic() + 60
    while True:
        task = api.get(f"/tasks/{task_id}").raise_for_status().json()
        if task["status"] in ("completed", "failed", "stopped"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {task_id} did not end within 60 s (poll is 300 s: no wake-up came?)")
        time.sleep(0.01)
    if task["status"] != "completed":
        raise RuntimeError(f"task {task_id} ended {task['status']}: {task['status_reason']}")
    return parse_iso(task["started_at"]) - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=50, help="measured tasks per path (default 50)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured tasks per path first (default 3)")
    args = parser.parse_args()
    folder, why = find_bin()
    if folder is None:
        sys.exit(why)

    with running_server(folder) as server:
        url = server.url(server.create_database())
        with host("hostA", url) as a, host("hostB", url) as b:
            b.fleetctl("up", "--port", "0", "--cpu-only", "--queue", "remote", "--create-queue")
            a.fleetctl("up", "--port", "0", "--cpu-only", "--queue", "local", "--create-queue")
            with a.api() as api_a, b.api() as api_b:
                b.wait_idle(api_b, 1)
                a.wait_idle(api_a, 2)  # both hosts' workers, seen from hostA
                print(machine(api_a))
                times: dict[str, list[float]] = {"local": [], "remote": []}
                for i in range(args.warmup + args.tasks):
                    for queue in ("local", "remote"):  # taking turns, so both meet the same load
                        took = until_started(api_a, queue, a.root)
                        if i >= args.warmup:
                            times[queue].append(took)

    print(f"enqueue on hostA -> claimed, {args.tasks} sequential tasks per path, idle workers polling every 300 s")
    print(row("same host", summary(times["local"])))
    print(row("other host", summary(times["remote"])))


if __name__ == "__main__":
    main()
