"""Kill loop: ``kill -9`` of task workers at random moments, 200 times.

A dynamic pool on logical GPUs 0-3 (queue ``one=1``: one GPU per task) and
two static workers on GPUs 4 and 5 run long tasks.  Each task, as it starts,
writes its own record (task, attempt, GPUs, time) and counts the processes
of *other* tasks of this run still alive on any of its GPUs (a scan of every
process's environment: this run's tag, ``FLEET_TASK_ID``,
``CUDA_VISIBLE_DEVICES``); then it forks a child that calls ``setsid`` and
both sleep.  The bench watches for tasks that are claimed (``in_progress``)
and kills the worker running each one at a random moment: 30 % at 0-400 ms
after the claim is seen, the rest 0-300 ms after the task's own start record: a
pool's per-task worker (often before it has even started the task, or
between the start and the write of its pid) or a static worker (at most
one kill per 13 s each, under the manager's limit of 5 restarts a minute).

Figures: kills, how many landed before the task's pid was recorded; orphaned
processes (a process of a killed task still alive once fleet recorded the
task ``failed``, and in a final sweep); GPUs double-booked (a task that found
another task's process alive on its GPU when it started).  Both must be 0.

Run:  .venv/bin/python -m bench.kill_loop [--kills 200]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass, field

import httpx
import psutil

from bench._common import CONFIG, PYTHON, TempFleet, machine, temp_fleet
from fleet.core.contain import Attempt

TAG = "FLEET_KILL_BENCH"

# The task: its own start record with a scan for other tasks' live processes on its GPUs.
TASK = """
import os, sys, time
tag = os.environ["FLEET_KILL_BENCH"].encode()
me = os.environ["FLEET_TASK_ID"]
mine = set(os.environ["CUDA_VISIBLE_DEVICES"].split(","))
clash = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = dict(e.split(b"=", 1) for e in fh.read().split(b"\\0") if b"=" in e)
    except OSError:
        continue
    if env.get(b"FLEET_KILL_BENCH") == tag and env.get(b"FLEET_TASK_ID", b"").decode() != me:
        if mine & set(env.get(b"CUDA_VISIBLE_DEVICES", b"").decode().split(",")):
            clash.append(pid)
line = f"start {me} {','.join(sorted(mine))} {time.time():.6f} {len(clash)}\\n"
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
os.write(fd, line.encode())
os.close(fd)
if os.fork() == 0:
    os.setsid()
    time.sleep(900)
    os._exit(0)
time.sleep(900)
"""

STATIC_GAP_S = 13.0  # at most 5 crashes a minute, or the manager stops restarting a worker


@dataclass
class Run:
    fleet: TempFleet
    api: httpx.Client
    tag: str
    host: str
    records: str
    rng: random.Random
    kills: int = 0
    before_pid: int = 0
    after_start: int = 0
    orphans: list[int] = field(default_factory=list)
    early: dict[str, float] = field(default_factory=dict)  # task -> when to kill its worker, started or not
    late: set[str] = field(default_factory=set)  # tasks to kill a random moment after their own start record
    kill_at: dict[str, float] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)
    killed: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)  # killed, not yet recorded as ended by fleet
    last_static_kill: dict[str, float] = field(default_factory=dict)
    _offset: int = 0

    def submit(self, queue: str, count: int) -> None:
        for _ in range(count):
            body = {
                "command": [PYTHON, "-c", TASK, self.records],
                "working_dir": str(self.fleet.root),
                "queue": queue,
                "env": {TAG: self.tag},
            }
            self.api.post("/tasks", json=body).raise_for_status()

    def read_starts(self, now: float) -> None:
        """New start records: a task picked for a late kill gets its moment now."""
        try:
            with open(self.records) as fh:
                fh.seek(self._offset)
                text = fh.read()
        except FileNotFoundError:
            return
        complete = text[: text.rfind("\n") + 1]
        self._offset += len(complete.encode())
        for line in complete.splitlines():
            tid = line.split()[1]
            self.started.add(tid)
            if tid in self.late:
                self.kill_at[tid] = now + self.rng.uniform(0.0, 0.3)

    def task_processes(self) -> dict[str, list[int]]:
        """Live processes of this run's tasks, by task id (environment scan)."""
        found: dict[str, list[int]] = {}
        tag = f"{TAG}={self.tag}".encode()
        for name in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{name}/environ", "rb") as fh:
                    entries = fh.read().split(b"\0")
                with open(f"/proc/{name}/stat") as fh:
                    state = fh.read().rpartition(")")[2].split()[0]
            except OSError:
                continue
            if tag in entries and state != "Z":
                task = next((e[14:].decode() for e in entries if e.startswith(b"FLEET_TASK_ID=")), "?")
                found.setdefault(task, []).append(int(name))
        return found

    def worker_pid(self, task: dict[str, object]) -> int | None:
        """The pid of the worker running ``task``: a pool's per-task worker or a static worker."""
        wid = str(task["worker"])
        if wid in (f"{self.host}:gpu4", f"{self.host}:gpu5"):
            pid = self.api.get(f"/workers/{wid}").json().get("pid")
            return int(pid) if pid else None
        for proc in psutil.process_iter(["cmdline"]):
            argv = proc.info["cmdline"] or []
            if "--task" in argv and str(task["id"]) in argv:
                return int(proc.pid)
        return None

    def pid_recorded(self, task_id: str) -> bool:
        conn = sqlite3.connect(f"file:{self.fleet.home / 'fleet.db'}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT pid FROM tasks WHERE id = ?", (task_id,)).fetchone()
        finally:
            conn.close()
        return bool(row and row[0])


def turn(run: Run, now: float) -> None:
    """Pick a kill moment for each newly claimed task, kill those that are due,
    and check the tasks fleet has since recorded as ended."""
    running = {
        t["id"]: t for t in run.api.get("/tasks", params={"status": "in_progress", "limit": 100}).json()["tasks"]
    }
    for tid in running:
        if tid not in run.early and tid not in run.late:
            if run.rng.random() < 0.3:  # any moment from the claim on: often before the task has started
                run.early[tid] = now
                run.kill_at[tid] = now + run.rng.uniform(0.0, 0.4)
            else:
                run.late.add(tid)
    run.read_starts(now)
    for tid, task in running.items():
        if tid in run.killed or run.kill_at.get(tid, float("inf")) > now:
            continue
        static = str(task["worker"]).endswith((":gpu4", ":gpu5"))
        if static and now - run.last_static_kill.get(task["worker"], -STATIC_GAP_S) < STATIC_GAP_S:
            continue
        pid = run.worker_pid(task)
        if pid is None:
            continue
        before = not run.pid_recorded(tid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        run.killed.add(tid)
        run.pending.add(tid)
        run.kills += 1
        run.before_pid += before
        run.after_start += tid in run.started
        if static:
            run.last_static_kill[task["worker"]] = now
    ended = {tid for tid in run.pending if tid not in running}
    if ended:  # fleet recorded them failed: nothing of them may be alive
        alive = run.task_processes()
        for tid in ended:
            run.orphans.extend(alive.get(tid, []))
        run.pending -= ended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-cgroups", action="store_true", help="fleet.cgroups: false (the environment marker alone)")
    args = parser.parse_args()
    with temp_fleet() as fleet:
        if args.no_cgroups:
            (fleet.root / "fleet.conf").write_text(CONFIG + "fleet { cgroups: false }\n")
        fleet.fleetctl("up", "--port", "0", "--gpus", "0-3", "--queue", "one=1", "--create-queue")
        fleet.up("4", "static")
        fleet.up("5", "static")
        records = str(fleet.root / "records")
        with fleet.api() as api:
            print(machine(api))
            probe = Attempt(fleet.home, "probe", 0)
            cgroups = not args.no_cgroups and probe.create_cgroup()
            probe.remove()
            print(f"containment: {'cgroup v2 + environment marker' if cgroups else 'environment marker only'}")
            run = Run(fleet, api, uuid.uuid4().hex, socket.gethostname(), records, random.Random(args.seed))
            started = time.monotonic()
            while run.kills < args.kills:
                now = time.monotonic()
                queued = api.get("/tasks", params={"status": "queued", "limit": 1}).json()["total"]
                if queued < 4:
                    run.submit("one", 4)
                    run.submit("static", 2)
                turn(run, now)
                time.sleep(0.05)
            deadline = time.monotonic() + 60
            while run.pending and time.monotonic() < deadline:
                turn(run, time.monotonic())
                time.sleep(0.05)
            elapsed = time.monotonic() - started
            alive = run.task_processes()
            ended = {t["id"] for t in api.get("/tasks", params={"status": "failed", "limit": 10_000}).json()["tasks"]}
            run.orphans.extend(p for tid, pids in alive.items() if tid in ended for p in pids)
        starts = [line.split() for line in open(records).read().splitlines()] if os.path.exists(records) else []
        double = sum(int(fields[4]) > 0 for fields in starts)
        print(
            f"{run.kills} kill -9 of task workers in {elapsed:.0f} s: {run.before_pid} before the task's pid was"
            f" recorded, {run.after_start} after the task's own start record"
        )
        print(f"tasks started (their own records): {len(starts)}; kills unresolved after 60 s: {len(run.pending)}")
        print(f"orphaned processes: {len(set(run.orphans))}")
        print(f"GPUs double-booked (a task found another task's process on its GPU at its start): {double}")


if __name__ == "__main__":
    main()
