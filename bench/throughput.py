"""Throughput of trivial tasks through 8 logical GPUs.

Eight static workers (one ``fleetctl up --gpus i --queue t`` per GPU 0-7).
M tasks of a trivial command (``/bin/true``, or ``[python, -c, pass]`` with
``--command python``) are submitted in one ``POST /tasks/batch`` (one
transaction, one wake-up), so the workers find a queue of M waiting tasks;
the script then waits until none is queued or running.  Reported: the drain
rate (tasks/s from the batch's answer to the last ``finished_at``), and a
check that every task ran exactly once (``completed``, ``attempt == 1``, one
start note in its log).  ``--each`` submits one ``POST /tasks`` per task
instead (the rate is then end to end, first submit -> last end).

Also reported: the CPU time spent per task during the drain, by the
workers themselves, by the processes they started (the tasks, reaped by
their workers), and by the manager, and the same for the bare pool (the
script's own threads, and its children).  On a shared machine the rate
moves with other people's load; the CPU per task does much less, and is
what a change to the launch path changes.

Yardsticks, in the same run: the same M commands run by 8 threads, each doing
``subprocess.run`` (what a bare launcher does on this machine), and
task-spooler with 8 slots (``tsp -S 8``, M ``tsp -n`` calls then wait for the
last; skipped when ``tsp`` is not installed).

The fleet's home is a temporary folder under ``$TMPDIR`` (else /tmp); the
file system it is on is printed with the machine, since a task log per task
makes a file per task: on an ext4 without a journal that costs the workers
about a third of their CPU after other files were removed (README,
Performance).

Run:  .venv/bin/python -m bench.throughput [--tasks 1000] [--command true|python]
      TMPDIR=/mnt/journaled .venv/bin/python -m bench.throughput
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psutil

from bench._common import PYTHON, TempFleet, machine, parse_iso, temp_fleet

GPUS = 8
PAGE = 10_000


def _own_cpu() -> tuple[float, float]:
    """This process's CPU seconds, and its reaped children's."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def _cpu(pids: list[int]) -> tuple[float, float]:
    """CPU seconds of ``pids`` themselves, and of their reaped children."""
    own = children = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        own += times.user + times.system
        children += times.children_user + times.children_system
    return own, children


def bare_pool(command: list[str], count: int) -> float:
    """Seconds for ``count`` runs of ``command`` on 8 threads (and the CPU per run)."""

    def one(_: int) -> None:
        subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=True)

    before = _own_cpu()
    start = time.time()
    with ThreadPoolExecutor(GPUS) as pool:
        list(pool.map(one, range(count)))
    elapsed = time.time() - start
    after = _own_cpu()
    own, kids = ((a - b) * 1000 / count for a, b in zip(after, before, strict=True))
    print(f"bare pool   CPU per task: launcher {own:.2f} ms, tasks {kids:.2f} ms")
    return elapsed


def task_spooler(command: list[str], count: int) -> float | None:
    """Seconds for ``count`` runs of ``command`` through task-spooler with 8 slots
    (its own server, in a temporary socket); None when ``tsp`` is not installed."""
    tsp = shutil.which("tsp") or shutil.which("ts")
    if tsp is None:
        return None
    with tempfile.TemporaryDirectory(prefix="fleet-bench-tsp-") as tmp:
        env = {**os.environ, "TS_SOCKET": f"{tmp}/socket", "TS_SAVELIST": f"{tmp}/list", "TMPDIR": tmp}
        subprocess.run([tsp, "-S", str(GPUS)], env=env, check=True)
        start = time.time()
        last = ""
        for _ in range(count):
            last = subprocess.run([tsp, "-n", *command], env=env, capture_output=True, text=True, check=True).stdout
        subprocess.run([tsp, "-w", last.strip()], env=env, capture_output=True)
        elapsed = time.time() - start
        subprocess.run([tsp, "-K"], env=env, capture_output=True)
    return elapsed


def all_tasks(api: httpx.Client) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    while True:
        page = api.get("/tasks", params={"queue": "t", "limit": PAGE, "offset": len(tasks)}).raise_for_status().json()
        tasks += page["tasks"]
        if len(tasks) >= page["total"] or not page["tasks"]:
            return tasks


def check_once(fleet: TempFleet, ids: list[str], tasks: list[dict[str, Any]]) -> list[str]:
    """Problems with 'every task completed exactly once' (empty when all is well)."""
    problems = []
    seen = Counter(t["id"] for t in tasks)
    if sorted(seen) != sorted(ids) or max(seen.values()) != 1:
        problems.append(f"{len(ids)} submitted, {len(tasks)} listed, {len(seen)} distinct")
    for t in tasks:
        starts = (fleet.home / "logs" / "tasks" / f"{t['id']}.log").read_text().count("[fleet] attempt ")
        if t["status"] != "completed" or t["attempt"] != 1 or starts != 2:  # one 'attempt N on', one 'ended'
            problems.append(f"{t['id']}: {t['status']}, attempt {t['attempt']}, {starts} attempt notes")
    return problems


def through_fleet(fleet: TempFleet, command: list[str], count: int, each: bool) -> float:
    """Tasks/s (the drain, or end to end with ``each``), after printing the details."""
    for gpu in range(GPUS):
        fleet.up(str(gpu), "t")
    with fleet.api() as api:
        fleet.wait_idle(api, GPUS)
        print(machine(api, fleet.home))
        body = {"command": command, "working_dir": str(fleet.root), "queue": "t"}
        workers = [int(w["pid"]) for w in api.get("/workers").raise_for_status().json()["workers"]]
        manager = int(json.loads((fleet.home / "manager.json").read_text())["pid"])
        cpu_before = _cpu(workers), _cpu([manager])
        first = time.time()
        if each:
            ids = [api.post("/tasks", json=body).raise_for_status().json()["id"] for _ in range(count)]
        else:
            batch = {"tasks": [body] * count}
            ids = api.post("/tasks/batch", json=batch).raise_for_status().json()["tasks"]
        submitted = time.time() - first
        if not each:
            first = time.time()  # the drain: from a queue of ``count`` waiting tasks
        pending: dict[str, str | int] = {"queue": "t", "status": "queued,in_progress", "limit": 1}
        while api.get("/tasks", params=pending).raise_for_status().json()["total"]:
            time.sleep(0.2)
        cpu_after = _cpu(workers), _cpu([manager])
        tasks = all_tasks(api)
    last = max(parse_iso(t["finished_at"]) for t in tasks)
    per_worker = Counter(t["worker"] for t in tasks)
    what = "end to end" if each else "drain"
    print(f"fleet       {count / (last - first):8.1f} tasks/s {what} ({last - first:.2f} s)")
    print(f"            {count / submitted:8.1f} tasks/s submitted ({submitted:.2f} s for {count} tasks)")
    print(f"            tasks per worker: {' '.join(f'{n}' for _, n in sorted(per_worker.items()))}")
    (w1, t1), (m1, _) = cpu_after
    (w0, t0), (m0, _) = cpu_before
    per = 1000 / count
    print(f"            CPU per task: workers {(w1 - w0) * per:.2f} ms, tasks {(t1 - t0) * per:.2f} ms,", end=" ")
    print(f"manager {(m1 - m0) * per:.2f} ms (the manager's includes the polling of this script)")
    problems = check_once(fleet, ids, tasks)
    print("exactly once: " + ("ok" if not problems else f"{len(problems)} problems"))
    for problem in problems[:10]:
        print("  " + problem)
    return count / (last - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000, help="tasks per side (default 1000)")
    parser.add_argument("--command", choices=["true", "python"], default="true", help="/bin/true or python -c pass")
    parser.add_argument("--each", action="store_true", help="one POST /tasks per task (end to end)")
    args = parser.parse_args()
    command = ["/bin/true"] if args.command == "true" else [PYTHON, "-c", "pass"]

    print(f"{args.tasks} x {' '.join(command)} through {GPUS} workers")
    bare_s = bare_pool(command, args.tasks)
    tsp_s = task_spooler(command, args.tasks)
    with temp_fleet() as fleet:
        fleet_rate = through_fleet(fleet, command, args.tasks, args.each)
    bare_rate = args.tasks / bare_s
    print(f"bare pool   {bare_rate:8.1f} tasks/s ({bare_s:.2f} s, 8 threads x subprocess.run)")
    if tsp_s is not None:
        print(f"tsp -S 8    {args.tasks / tsp_s:8.1f} tasks/s ({tsp_s:.2f} s, {args.tasks} x tsp -n, then tsp -w)")
    print(f"fleet / bare = {fleet_rate / bare_rate:.3f}")


if __name__ == "__main__":
    main()
