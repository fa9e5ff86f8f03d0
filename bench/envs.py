"""Environment preparation: from enqueue to the task's first line, for a task
that needs one small package (``six``) and one larger one (``numpy``).

For each manager (uv, pip), in a fresh ``FLEET_HOME`` with one idle CPU worker:

- cold:      nothing cached (no environment, empty download cache)
- warm dl:   the environment cache emptied, the download cache kept
- warm:      the same task again: the cached environment is reused as is

Latency = the time the task prints (its first line, after importing both
packages) minus the time just before ``POST /tasks``.

Baseline, in the same run: plain ``python -m venv D`` + ``D/bin/pip install six
numpy`` + the same command, timed from the start, with an empty pip cache
(cold) and with the cache it filled (warm dl; plain pip has no "warm").

Run:  .venv/bin/python -m bench.envs [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from bench._common import CONFIG, TempFleet, machine, temp_fleet
from fleet.worker.envs.python import fleet_python

PACKAGES = ["six", "numpy"]
CODE = "import six, numpy, time; print('FIRST-LINE', time.time(), flush=True)"


def first_line(log: str) -> float:
    for line in log.splitlines():
        if "FIRST-LINE" in line:
            return float(line.split("FIRST-LINE", 1)[1])
    raise RuntimeError(f"the task printed no first line:\n{log}")


def through_fleet(fleet: TempFleet, api: httpx.Client) -> tuple[float, bool]:
    t0 = time.time()
    body = {"command": ["python", "-c", CODE], "working_dir": str(fleet.root), "queue": "q"}
    task_id = api.post("/tasks", json={**body, "requirements": {"packages": PACKAGES}}).raise_for_status().json()["id"]
    with api.stream("GET", f"/tasks/{task_id}/log", params={"follow": True}, timeout=600) as answer:
        log = answer.raise_for_status().read().decode()
    task = api.get(f"/tasks/{task_id}").raise_for_status().json()
    if task["status"] != "completed":
        raise RuntimeError(f"task {task_id} ended {task['status']}: {task['status_reason']}\n{log}")
    return first_line(log) - t0, bool(task["env_cached"])


def fleet_runs(manager: str) -> dict[str, float]:
    with temp_fleet() as fleet:
        agent = f"agent {{\n  package_manager {{ type: {manager} }}\n}}\n"
        (fleet.root / "fleet.conf").write_text(CONFIG + agent)
        fleet.up("0", "q")
        with fleet.api() as api:
            fleet.wait_idle(api, 1)
            cold, cached = through_fleet(fleet, api)
            assert not cached
            shutil.rmtree(fleet.home / "venvs-cache")
            warm_dl, cached = through_fleet(fleet, api)
            assert not cached
            warm, cached = through_fleet(fleet, api)
            assert cached
            print(f"  {machine(api)}")
    return {"cold": cold, "warm dl": warm_dl, "warm": warm}


def plain_pip(cache: Path) -> float:
    python = fleet_python().executable
    with tempfile.TemporaryDirectory(prefix="fleet-bench-venv-") as tmp:
        venv = Path(tmp) / "venv"
        env = {**os.environ, "PIP_CACHE_DIR": str(cache), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        t0 = time.time()
        subprocess.run([python, "-m", "venv", str(venv)], check=True, env=env)
        subprocess.run([str(venv / "bin/pip"), "install", "-q", *PACKAGES], check=True, env=env)
        out = subprocess.run(
            [str(venv / "bin/python"), "-c", CODE], check=True, env=env, capture_output=True, text=True
        )
        return first_line(out.stdout) - t0


def baseline_runs() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="fleet-bench-pipcache-") as cache:
        cold = plain_pip(Path(cache))
        warm_dl = plain_pip(Path(cache))
    return {"cold": cold, "warm dl": warm_dl}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2, help="runs of everything; the median is shown (default 2)")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"fleet uv": [], "fleet pip": [], "venv + pip": []}
    for n in range(args.repeat):
        print(f"run {n + 1}/{args.repeat}")
        results["venv + pip"].append(baseline_runs())
        results["fleet uv"].append(fleet_runs("uv"))
        results["fleet pip"].append(fleet_runs("pip"))
    print(f"enqueue -> first line of a task importing {' + '.join(PACKAGES)}; median of {args.repeat} (seconds)")
    print(f"{'':<12}{'cold':>8}{'warm dl':>10}{'warm':>8}")
    for label, runs in results.items():
        cells = []
        for column in ("cold", "warm dl", "warm"):
            values = [r[column] for r in runs if column in r]
            cells.append(f"{statistics.median(values):.2f}" if values else "-")
        print(f"{label:<12}{cells[0]:>8}{cells[1]:>10}{cells[2]:>8}")


if __name__ == "__main__":
    main()
