"""What the manager costs with 8 workers and sampling on: CPU, RSS, and the sampler's tick.

One manager with eight static workers (``fleetctl up --gpus i --queue q``
for GPU 0-7, logical GPUs).  Two phases of ``--window`` seconds each:

- idle: nothing queued;
- stream: a task submitted every ``1 / --rate`` seconds through the API,
  each ``[python, -c, "import time; time.sleep(1)"]``, so several tasks run
  at once and the sampler measures every one of their process groups.

For each phase: the manager process's CPU (user + system over the window,
as % of one core) and its RSS at the end.  Then the sampler's own cost per
tick, as the manager measured it (wall and thread-CPU time of each tick:
psutil reads, NVML, the process-group scan, one SQLite write).

Baseline, in the same run: the same phases with sampling effectively off
(``fleet.metrics.interval`` of a week: one tick at start, then none).

Run:  .venv/bin/python -m bench.manager_cost [--window 30] [--rate 4] [--interval 5]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
import psutil

from bench._common import CONFIG, PYTHON, TempFleet, machine, temp_fleet

GPUS = 8
TASK = [PYTHON, "-c", "import time; time.sleep(1)"]
OFF = 7 * 86400.0


@dataclass
class Phase:
    cpu_percent: float
    rss_mb: float
    tasks: int = 0


def _manager(fleet: TempFleet) -> psutil.Process:
    return psutil.Process(int(json.loads((fleet.home / "manager.json").read_text())["pid"]))


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _measure(fleet: TempFleet, api: httpx.Client, window: float, rate: float) -> Phase:
    proc = _manager(fleet)
    cpu0, t0 = _cpu(proc), time.monotonic()
    submitted = 0
    while (now := time.monotonic()) < t0 + window:
        if rate > 0 and submitted < (now - t0) * rate:
            api.post("/tasks", json={"command": TASK, "working_dir": str(fleet.root), "queue": "q"}).raise_for_status()
            submitted += 1
            continue
        time.sleep(0.01 if rate > 0 else 0.5)
    elapsed = time.monotonic() - t0
    return Phase((_cpu(proc) - cpu0) / elapsed * 100, proc.memory_info().rss / 2**20, submitted)


def _drain(api: httpx.Client, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queues = api.get("/queues").raise_for_status().json()["queues"]
        if not any(q["pending"] or q["running"] for q in queues):
            return
        time.sleep(0.2)
    raise RuntimeError("tasks did not finish")


def run(interval: float, window: float, rate: float) -> tuple[Phase, Phase, dict[str, Any], str]:
    with temp_fleet() as fleet:
        (fleet.root / "fleet.conf").write_text(CONFIG + f"fleet {{ metrics {{ interval: {interval} }} }}\n")
        for gpu in range(GPUS):
            fleet.up(str(gpu), "q")
        with fleet.api() as api:
            fleet.wait_idle(api, GPUS)
            time.sleep(2)  # let start-up settle
            idle = _measure(fleet, api, window, 0)
            stream = _measure(fleet, api, window, rate)
            cost = api.get("/metrics/current").raise_for_status().json()
            _drain(api)
            return idle, stream, cost, machine(api)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=float, default=30, help="seconds per phase (default 30)")
    parser.add_argument("--rate", type=float, default=4, help="tasks submitted per second in the stream (default 4)")
    parser.add_argument("--interval", type=float, default=5, help="fleet.metrics.interval (default 5)")
    args = parser.parse_args()

    off_idle, off_stream, _, _ = run(OFF, args.window, args.rate)
    on_idle, on_stream, cost, about = run(args.interval, args.window, args.rate)
    print(about)
    print(f"manager with {GPUS} workers, {args.window:g}s per phase; stream: {args.rate:g} tasks/s of sleep 1")
    print(f"{'':<26}{'CPU % of a core':>16}{'RSS MB':>10}{'tasks':>8}")
    for label, phase in (
        ("sampling off, idle", off_idle),
        (f"sampling {args.interval:g}s, idle", on_idle),
        ("sampling off, stream", off_stream),
        (f"sampling {args.interval:g}s, stream", on_stream),
    ):
        print(f"{label:<26}{phase.cpu_percent:>16.2f}{phase.rss_mb:>10.1f}{phase.tasks:>8}")
    sampler = cost["sampler"]
    print(
        f"sampler per tick ({sampler['ticks']} ticks, both phases): wall mean {sampler['wall_ms_mean']:.2f} ms,"
        f" max {sampler['wall_ms_max']:.2f} ms; thread CPU mean {sampler['cpu_ms_mean']:.2f} ms"
        f" -> {sampler['cpu_ms_mean'] / (args.interval * 1000) * 100:.3f}% of a core at {args.interval:g}s"
    )


if __name__ == "__main__":
    main()
