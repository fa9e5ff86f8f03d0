"""What both benchmarks share: a fleet in a temporary home, and statistics."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

CONFIG = "fleet {\n  poll_interval: 2\n}\n"

# The interpreter the tasks run: the real binary, not a pyenv shim or venv link.
PYTHON = os.path.realpath(sys.executable)


@dataclass
class TempFleet:
    """A manager and its workers in a throw-away ``FLEET_HOME``."""

    root: Path
    env: dict[str, str]

    @property
    def home(self) -> Path:
        return self.root / "home"

    def fleetctl(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "fleet.cli", *args], env=self.env, capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"fleetctl {' '.join(args)} -> {result.returncode}\n{result.stdout}{result.stderr}")
        return result.stdout

    def up(self, gpus: str, queue: str) -> None:
        first = ("--port", "0") if not (self.home / "manager.json").exists() else ()
        self.fleetctl("up", *first, "--gpus", gpus, "--queue", queue, "--create-queue")

    def headers(self) -> dict[str, str]:
        """The manager's token (``home/api.token``), for a request over TCP."""
        return {"Authorization": f"Bearer {(self.home / 'api.token').read_text().strip()}"}

    def api(self) -> httpx.Client:
        """A client over TCP with the manager's token."""
        url = str(json.loads((self.home / "manager.json").read_text())["url"])
        return httpx.Client(base_url=url + "/api/v1", headers=self.headers(), timeout=60)

    def wait_idle(self, api: httpx.Client, count: int, timeout: float = 60) -> None:
        """Until ``count`` workers run and wait for work.

        ``up`` returns before the worker processes run; until then the store
        shows them ``idle`` with the reason ``starting``."""
        deadline = time.monotonic() + timeout
        while True:
            workers = api.get("/workers").raise_for_status().json()["workers"]
            if sum(w["state"] == "idle" and w["state_reason"] != "starting" for w in workers) >= count:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not become idle: {[w['state'] for w in workers]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if (self.home / "manager.json").exists():
            self.fleetctl("stop", "--timeout", "60")

    def leftovers(self) -> list[psutil.Process]:
        """Processes still running under this home (there should be none)."""
        mine = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if proc.pid != os.getpid() and proc.status() != psutil.STATUS_ZOMBIE:
                    in_args = str(self.home) in " ".join(proc.info["cmdline"] or [])
                    if in_args or proc.environ().get("FLEET_HOME") == str(self.home):
                        mine.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return mine


@contextmanager
def temp_fleet(config: str = CONFIG, env: dict[str, str] | None = None) -> Iterator[TempFleet]:
    """A fleet home under a temporary folder, with ``config`` as its config file
    and ``env`` added to its environment (``FLEET_STORE_URL``,
    ``FLEET_WORKER_NAME``: one host of a fleet on PostgreSQL); stopped (and
    checked) on the way out."""
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        root = Path(tmp)
        (root / "fleet.conf").write_text(config)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "CLEARML_"))}
        env = {**base, **(env or {})}
        env.update(FLEET_HOME=str(root / "home"), FLEET_CONFIG_FILE=str(root / "fleet.conf"), HOME=str(root))
        fleet = TempFleet(root, env)
        try:
            yield fleet
        finally:
            fleet.stop()
            for proc in fleet.leftovers():
                print(f"warning: killing leftover process {proc.pid}: {proc.info['cmdline']}", file=sys.stderr)
                proc.send_signal(signal.SIGKILL)


def wait_drained(api: httpx.Client, timeout: float = 300) -> None:
    """Until no task is queued or running (or ``timeout`` has passed)."""
    deadline = time.monotonic() + timeout
    while api.get("/tasks", params={"status": "queued,in_progress", "limit": 1}).json()["total"]:
        if time.monotonic() > deadline:
            return
        time.sleep(0.2)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), interpolating between closest ranks."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean/min in milliseconds."""
    ms = [v * 1000 for v in values_s]
    return {
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "mean": sum(ms) / len(ms),
        "min": min(ms),
    }


def row(label: str, stats: dict[str, float]) -> str:
    return f"{label:<18}" + "".join(f"{k} {v:8.2f}  " for k, v in stats.items()).rstrip() + "  (ms)"


def parse_iso(text: str) -> float:
    """``2026-01-02T03:04:05.678Z`` -> epoch seconds (Python 3.10 lacks ``Z``)."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def machine(api: httpx.Client, home: Path | None = None) -> str:
    health: dict[str, Any] = api.get("/health").raise_for_status().json()
    where = f" | home on {file_system(home)}" if home is not None else ""
    return f"python {PYTHON} | cores {os.cpu_count()} | NVML {'yes' if health['nvml'] else 'no'}{where}"


def file_system(path: Path) -> str:
    """The file system ``path`` is on, in words: its type, mount point and,
    for ext4, whether it has a journal.  A journal-less ext4 skips inodes
    deleted in the last minutes when it makes a file (``recently_deleted``
    in the kernel), which a task log per task pays for after other files
    were removed (README, Performance); put the home elsewhere with ``TMPDIR``."""
    dev = os.stat(path).st_dev
    wanted = f"{os.major(dev)}:{os.minor(dev)}"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or fields[2] != wanted or not tail:
            continue
        kind, source = tail[0], tail[1] if len(tail) > 1 else "?"
        if kind == "ext4":
            try:
                task = Path("/sys/fs/ext4", os.path.basename(source), "journal_task").read_text().strip()
                kind += ", no journal" if task == "<none>" else ", journal"
            except OSError:
                pass
        return f"{kind} ({fields[4]})"
    return "?"


# A task's first line prints this and the time; the benchmarks put the marker
# together at run time ('FIRST' + '-LINE') where the command line is logged.
FIRST_LINE = "FIRST-LINE "


def first_line(log: str) -> float:
    """The time a task printed its first line (``FIRST-LINE <time.time()>``)."""
    for line in log.splitlines():
        if FIRST_LINE in line:
            return float(line.split(FIRST_LINE, 1)[1].split()[0])
    raise RuntimeError(f"the task printed no first line:\n{log}")


def until_first_line(api: httpx.Client, body: dict[str, Any], *, from_claim: bool = False) -> tuple[float, bool]:
    """Submit a task; (seconds from just before the POST to its first line, env_cached).

    ``from_claim``: from its attempt's start in the store (the claim) instead."""
    t0 = time.time()
    task_id = api.post("/tasks", json=body).raise_for_status().json()["id"]
    with api.stream("GET", f"/tasks/{task_id}/log", params={"follow": True}, timeout=600) as answer:
        log = answer.raise_for_status().read().decode()
    task = api.get(f"/tasks/{task_id}").raise_for_status().json()
    if task["status"] != "completed":
        raise RuntimeError(f"task {task_id} ended {task['status']}: {task['status_reason']}\n{log}")
    if from_claim:
        t0 = parse_iso(task["attempts"][-1]["started_at"])
    return first_line(log) - t0, bool(task["env_cached"])


def median_table(results: dict[str, list[dict[str, float]]], columns: Sequence[str], label_width: int = 14) -> str:
    """One row per label, the median of each column over the runs ("-" where none)."""
    lines = [f"{'':<{label_width}}" + "".join(f"{c:>10}" for c in columns)]
    for label, runs in results.items():
        cells = []
        for column in columns:
            values = [r[column] for r in runs if column in r]
            cells.append(f"{statistics.median(values):.2f}" if values else "-")
        lines.append(f"{label:<{label_width}}" + "".join(f"{c:>10}" for c in cells))
    return "\n".join(lines)
