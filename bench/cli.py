"""fleetctl start-up: whole-process wall time of client commands.

One manager with one CPU worker on queue ``q``; ``submit`` goes to queue
``idle``, which no worker serves, so no task runs while the clock does.
Each command runs N times, the commands taking turns (so a busy moment of
the machine hits all of them alike); the figure is the median of the whole
process, from ``fork`` to its exit, stdout to /dev/null:

* ``python -c pass``: the interpreter's own start-up, the yardstick;
* ``fleetctl submit --queue idle -- /bin/true``, ``tasks``, ``status``,
  ``--help``, as ``python -m fleet.cli`` and (submit) as the ``fleetctl``
  console script next to the interpreter, when installed;
* ``tsp -n /bin/true`` (task-spooler, its own server in a temporary socket)
  when ``tsp`` is on PATH.

The figures assume compiled bytecode, as a pip install leaves it: with
``PYTHONDONTWRITEBYTECODE=1`` set, run ``python -m compileall -q fleet`` first,
or every run compiles fleet's modules again.

Run:  .venv/bin/python -m bench.cli [--runs 30]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import machine, temp_fleet

BUDGET_MS = 80  # issue 16: a client command costs at most this over `python -c pass`


def wall(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    result = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {result.returncode}: {result.stderr.decode()}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="measured runs per command (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured runs first (default 3)")
    args = parser.parse_args()
    python = sys.executable
    fleetctl = Path(python).with_name("fleetctl")
    with temp_fleet() as fleet, tempfile.TemporaryDirectory(prefix="fleet-bench-tsp-") as tsp_dir:
        fleet.fleetctl("up", "--port", "0", "--cpu-only", "--queue", "q", "--create-queue")
        fleet.fleetctl("queue", "create", "idle")
        cli = [python, "-m", "fleet.cli"]
        commands: dict[str, list[str]] = {
            "python -c pass": [python, "-c", "pass"],
            "submit": [*cli, "submit", "--queue", "idle", "--", "/bin/true"],
            "tasks": [*cli, "tasks"],
            "status": [*cli, "status"],
            "--help": [*cli, "--help"],
        }
        if fleetctl.exists():
            commands["submit (fleetctl script)"] = [str(fleetctl), "submit", "--queue", "idle", "--", "/bin/true"]
        env = dict(fleet.env)
        tsp = shutil.which("tsp")
        if tsp:
            env["TS_SOCKET"] = str(Path(tsp_dir) / "socket")
            env["TMPDIR"] = tsp_dir
            commands["tsp -n /bin/true"] = [tsp, "-n", "/bin/true"]
        times: dict[str, list[float]] = {name: [] for name in commands}
        try:
            for i in range(args.warmup + args.runs):
                for name, argv in commands.items():
                    took = wall(argv, env, fleet.root)
                    if i >= args.warmup:
                        times[name].append(took)
        finally:
            if tsp:
                subprocess.run([tsp, "-K"], env=env, capture_output=True)
        with fleet.api() as api:
            print(machine(api))
    origin = importlib.util.find_spec("fleet.cli.main").origin  # type: ignore[union-attr]
    compiled = origin is not None and Path(importlib.util.cache_from_source(origin)).exists()
    bytecode = "compiled" if compiled else "NOT compiled (see the docstring)"
    print(f"fleet's bytecode: {bytecode}; PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')}")
    base = statistics.median(times["python -c pass"]) * 1000
    print(f"{'':<28}{'median':>10}{'p90':>10}{'over python':>14}   (ms, {args.runs} runs each)")
    for name, values in times.items():
        ms = sorted(v * 1000 for v in values)
        median = statistics.median(ms)
        p90 = ms[int(0.9 * (len(ms) - 1))]
        print(f"{name:<28}{median:>10.1f}{p90:>10.1f}{median - base:>14.1f}")
    over = {n: statistics.median(v) * 1000 - base for n, v in times.items() if not n.startswith(("python", "tsp"))}
    worst = max(over, key=lambda n: over[n])
    verdict = "within" if over[worst] <= BUDGET_MS else "OVER"
    print(f"slowest client command: {worst}, {over[worst]:.1f} ms over python: {verdict} the {BUDGET_MS} ms budget")


if __name__ == "__main__":
    main()
