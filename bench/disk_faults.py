"""Disk faults: a stream of tasks through full-disk and read-only episodes.

Two static workers pull from one queue; the home is on a 20 MB tmpfs (needs
root).  Each task appends its own id to a file outside the home when it runs.
The client submits ``--tasks`` tasks in a stream; a submit the store refuses
(503, naming the cause) is counted and tried again after a pause, as a client
of a 503 should.  Meanwhile, ``--episodes`` times:

- ``disk-full``: a filler file takes all but 512 KB, a chatty task writes
  the rest (its log cannot be written: it must end ``failed`` with that
  reason), the disk stays full for ``--hold`` seconds, then the filler is
  deleted;
- ``read-only``: the database file is made immutable (``chattr +i``), the
  manager is killed (``kill -9``, counted as a deliberate restart) and started
  again with ``fleetctl up`` on the read-only file, one worker is killed, and
  after ``--hold`` seconds the file is made writable again.

At the end every submitted task must have completed and run exactly once.
Printed: refused submits and their causes; crashes (manager or worker exits
nobody asked for: pids that changed other than the ones killed, and worker
restarts beyond the killed workers); tasks lost (not completed), duplicated
(ran twice); chatty tasks failed with the log reason; ``PRAGMA
integrity_check``; the time from each episode's end to the first task
completed after it.

Run:  sudo .venv/bin/python -m bench.disk_faults [--fault disk-full|read-only|both] [--tasks 100] [--episodes 3] [--hold 5]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench._common import TempFleet, machine, parse_iso, row, summary, temp_fleet, wait_drained

# Waits for its go file (argv[1]), then writes 3 MB as fast as it can and exits.
CHATTY = (
    "import os, sys, time\n"
    "while not os.path.exists(sys.argv[1]):\n    time.sleep(0.02)\n"
    "line = 'x' * 1023 + '\\n'\n"
    "for _ in range(3 * 1024):\n    sys.stdout.write(line)\n"
)


ENDED = ("completed", "failed", "stopped")


def _run(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True)


def fill(folder: Path, leave: int = 0) -> Path:
    """A filler file taking all the free space of ``folder``'s file system but ``leave`` bytes."""
    filler = folder / "filler"
    stat = os.statvfs(folder)
    size = max(stat.f_bavail * stat.f_frsize - leave, 0)
    with open(filler, "wb") as fh:
        chunk = b"\0" * (1 << 20)
        try:
            while size > 0:
                size -= fh.write(chunk[: min(size, len(chunk))])
        except OSError:
            pass
    return filler


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Stream:
    """Submits the tasks; a refused submit is tried again after a pause."""

    def __init__(self, fleet: TempFleet, runs: Path, total: int) -> None:
        self.fleet = fleet
        self.body = {
            "command": ["sh", "-c", f'echo "$FLEET_TASK_ID" >> {runs}; sleep 0.05'],
            "working_dir": str(fleet.root),
            "queue": "q",
        }
        self.total = total
        self.created: list[str] = []
        self.refused: collections.Counter[str] = collections.Counter()

    def submit(self, count: int) -> None:
        with self.fleet.api() as api:
            for _ in range(min(count, self.total - len(self.created))):
                self.one(api)

    def one(self, api: httpx.Client) -> None:
        while not self.try_one(api):
            time.sleep(0.5)

    def try_one(self, api: httpx.Client) -> bool:
        """One submit; False when the store refused it (503, counted by its cause)."""
        answer = api.post("/tasks", json=self.body)
        if answer.status_code == 201:
            self.created.append(answer.json()["id"])
            return True
        if answer.status_code != 503:
            raise RuntimeError(f"submit: {answer.status_code} {answer.text}")
        self.refused[answer.json()["error"].split(" (")[0]] += 1
        return False

    def hold(self, seconds: float) -> None:
        """Go on submitting (one every 0.2 s) for ``seconds``."""
        end = time.monotonic() + seconds
        with self.fleet.api() as api:
            while time.monotonic() < end:
                if len(self.created) < self.total:
                    self.try_one(api)
                time.sleep(0.2)


def _pids(fleet: TempFleet) -> dict[str, int]:
    with fleet.api() as api:
        workers = api.get("/workers").raise_for_status().json()["workers"]
        info: dict[str, int] = {w["id"]: int(w["pid"]) for w in workers if w.get("pid")}
    info["manager"] = int(json.loads((fleet.home / "manager.json").read_text())["pid"])
    return info


def _first_completion_after(api: httpx.Client, since: float) -> float:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        tasks = api.get("/tasks", params={"status": "completed", "limit": 20}).json()["tasks"]
        ends = [parse_iso(t["finished_at"]) for t in tasks if t["finished_at"]]
        ends = [end for end in ends if end >= since]
        if ends:
            return min(ends) - since
        time.sleep(0.1)
    raise RuntimeError("no task completed after the episode")


def disk_full_episode(fleet: TempFleet, stream: Stream, hold: float, chatty: list[str]) -> float:
    """A chatty task starts, the disk is filled but 512 KB, the task's output takes the rest."""
    go = fleet.root / f"go-{len(chatty)}"
    with fleet.api() as api:
        body = {"command": ["python3", "-c", CHATTY, str(go)], "working_dir": str(fleet.root), "queue": "q"}
        task_id = api.post("/tasks", json=body).raise_for_status().json()["id"]
        chatty.append(task_id)
        while api.get(f"/tasks/{task_id}").json()["status"] != "in_progress":
            time.sleep(0.05)
    filler = fill(fleet.home, leave=512 * 1024)
    go.touch()
    stream.hold(hold)
    filler.unlink()
    return time.time()


def read_only_episode(fleet: TempFleet, stream: Stream, hold: float, killed: list[int]) -> float:
    db = fleet.home / "fleet.db"
    deadline = time.monotonic() + 60
    pids = _pids(fleet)
    while len(pids) < 3 or not all(_alive(pid) for pid in pids.values()):  # the last episode's worker is back
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers did not come back: {pids}")
        time.sleep(0.2)
        pids = _pids(fleet)
    _run("chattr", "+i", str(db))
    try:
        os.kill(pids["manager"], signal.SIGKILL)
        killed.append(pids["manager"])
        while _alive(pids["manager"]):
            time.sleep(0.01)
        fleet.fleetctl("up", "--gpus", "0", "--queue", "q")  # a new manager, on the read-only file
        worker = next(pid for wid, pid in pids.items() if wid != "manager")
        os.kill(worker, signal.SIGKILL)
        killed.append(worker)
        stream.hold(hold)
    finally:
        _run("chattr", "-i", str(db))
    return time.time()


def run(fault: str, tasks: int, episodes: int, hold: float) -> dict[str, Any]:
    with temp_fleet() as fleet:
        fleet.home.mkdir(mode=0o700)
        _run("mount", "-t", "tmpfs", "-o", "size=20m,mode=0700", "tmpfs", str(fleet.home))
        try:
            return _measure(fleet, fault, tasks, episodes, hold)
        finally:
            (fleet.home / "filler").unlink(missing_ok=True)
            fleet.stop()
            deadline = time.monotonic() + 30
            while fleet.leftovers() and time.monotonic() < deadline:
                time.sleep(0.1)
            subprocess.run(["umount", "-l", str(fleet.home)], check=False)


def _measure(fleet: TempFleet, fault: str, tasks: int, episodes: int, hold: float) -> dict[str, Any]:
    runs = fleet.root / "runs"
    fleet.up("0", "q")
    fleet.up("1", "q")
    with fleet.api() as api:
        print(machine(api))
        fleet.wait_idle(api, 2)
    before = _pids(fleet)
    stream = Stream(fleet, runs, tasks)
    chatty: list[str] = []
    killed: list[int] = []
    recoveries: list[float] = []
    per_round = max(tasks // (episodes + 2), 1)
    for _ in range(episodes):
        stream.submit(per_round)
        if fault == "disk-full":
            ended = disk_full_episode(fleet, stream, hold, chatty)
        else:
            ended = read_only_episode(fleet, stream, hold, killed)
        with fleet.api() as api:
            stream.one(api)  # one more, submitted after the episode
            recoveries.append(_first_completion_after(api, ended))
    stream.submit(tasks)
    with fleet.api() as api:
        wait_drained(api)
        done = {t["id"]: t for t in api.get("/tasks", params={"limit": 10_000}).json()["tasks"]}
        workers = api.get("/workers").json()["workers"]
    after = _pids(fleet)
    counts = collections.Counter(runs.read_text().split()) if runs.exists() else collections.Counter()
    changed = [k for k in before if before[k] != after.get(k) and before[k] not in killed]
    restarts = sum(int(w["restarts"]) for w in workers)
    worker_kills = len(killed) // 2  # a read-only episode kills the manager and one worker
    conn = sqlite3.connect(fleet.home / "fleet.db")
    integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    return {
        "fault": fault,
        "tasks": len(stream.created),
        "refused": dict(stream.refused),
        "crashes": len(changed) + max(restarts - worker_kills, 0),
        "deliberate": len(killed),
        "lost": len([t for t in stream.created if done.get(t, {}).get("status") not in ENDED]),
        "outcomes": collections.Counter(
            f"{done[t]['status']}" + (f" ({done[t]['status_reason'][:60]})" if done[t]["status_reason"] else "")
            for t in stream.created
            if t in done
        ),
        "duplicated": len([t for t, n in counts.items() if n > 1]),
        "chatty": [f"{done[t]['status']}: {done[t]['status_reason']}" for t in chatty if t in done],
        "integrity": integrity,
        "recoveries": recoveries,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--fault", choices=("disk-full", "read-only", "both"), default="both")
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--hold", type=float, default=5.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: it mounts a small tmpfs and uses chattr")
    faults = ("disk-full", "read-only") if args.fault == "both" else (args.fault,)
    for fault in faults:
        result = run(fault, args.tasks, args.episodes, args.hold)
        print(f"{fault}: {args.episodes} episodes of {args.hold:g}s, {result['tasks']} tasks through 2 workers")
        print(f"  submits refused meanwhile: {sum(result['refused'].values())} {result['refused']}")
        print(
            f"  crashes: {result['crashes']} (deliberate kills: {result['deliberate']}); "
            f"tasks lost: {result['lost']}; duplicated: {result['duplicated']}; integrity_check: {result['integrity']}"
        )
        for line in result["chatty"]:
            print(f"  chatty task: {line}")
        print(f"  outcomes: {dict(result['outcomes'])}")
        print(row("  resume", summary(result["recoveries"])))


if __name__ == "__main__":
    main()
