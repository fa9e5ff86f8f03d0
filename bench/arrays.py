"""Sweeps in one call: 1,000 tasks through one ``fleetctl submit --array``.

One manager with one CPU worker on queue ``parking``; the sweeps go to queue
``idle``, which no worker serves, so no task runs while the clock does;
the commands run in the fleet's temporary folder (not a git checkout).
Measured, whole process (fork to exit, stdout to /dev/null), in one run:

* ``fleetctl submit --queue idle --array 0-999 -- /bin/true``: ``--runs``
  times, the median (issue 16's target: at most 1 s);
* single ``fleetctl submit --queue idle -- /bin/true`` processes: ``--singles``
  of them, the median, times 1,000 for the extrapolated cost of 1,000 (the
  tasks are the same; a submit's cost does not grow with the queue here);
* ``python -c pass``, the interpreter's own start-up, as the yardstick.

Each sweep is checked: 1,000 tasks in the array, all queued, indices 0-999.

Run:  .venv/bin/python -m bench.arrays [--runs 5] [--singles 30]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench._common import machine, temp_fleet

SIZE = 1000


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False, cwd=cwd)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} -> {result.returncode}: {result.stderr}")
    return seconds, result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--singles", type=int, default=30)
    args = parser.parse_args()
    fleetctl = [sys.executable, "-m", "fleet.cli"]
    with temp_fleet() as fleet:
        fleet.up("0", "parking")
        fleet.fleetctl("queue", "create", "idle")
        with fleet.api() as api:
            print(machine(api))
            sweeps: list[float] = []
            singles: list[float] = []
            bare: list[float] = []
            for run in range(max(args.runs, args.singles)):  # taking turns, so a busy moment hits all alike
                if run < args.runs:
                    seconds, array = timed(
                        [*fleetctl, "submit", "--queue", "idle", "--array", "0-999", "--", "/bin/true"],
                        fleet.env,
                        fleet.root,
                    )
                    sweeps.append(seconds)
                    tasks = api.get("/tasks", params={"array": array, "limit": 10_000}).raise_for_status().json()
                    indices = sorted(int(t["array_index"]) for t in tasks["tasks"])
                    assert tasks["total"] == SIZE and indices == list(range(SIZE)), (tasks["total"], indices[:5])
                    assert {t["status"] for t in tasks["tasks"]} == {"queued"}
                if run < args.singles:
                    singles.append(
                        timed([*fleetctl, "submit", "--queue", "idle", "--", "/bin/true"], fleet.env, fleet.root)[0]
                    )
                    bare.append(timed([sys.executable, "-c", "pass"], fleet.env, fleet.root)[0])
    sweep, single, pyrun = statistics.median(sweeps), statistics.median(singles), statistics.median(bare)
    print(
        f"fleetctl submit --array 0-999 -- /bin/true      : {sweep * 1000:7.0f} ms median of {len(sweeps)} (1,000 tasks)"
    )
    print(f"fleetctl submit -- /bin/true, one task          : {single * 1000:7.0f} ms median of {len(singles)}")
    print(f"  x 1,000 single submits (extrapolated)         : {single * SIZE:7.1f} s")
    print(f"python -c pass                                  : {pyrun * 1000:7.0f} ms median of {len(bare)}")
    print(f"one sweep call vs 1,000 single calls            : {single * SIZE / sweep:7.0f}x faster")


if __name__ == "__main__":
    main()
