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
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from bench._common import CONFIG, TempFleet, first_line, machine, median_table, temp_fleet, until_first_line
from fleet.worker.envs.python import fleet_python

PACKAGES = ["six", "numpy"]
CODE = "import six, numpy, time; print('FIRST' + '-LINE', time.time(), flush=True)"


def through_fleet(fleet: TempFleet, api: httpx.Client) -> tuple[float, bool]:
    body = {"command": ["python", "-c", CODE], "working_dir": str(fleet.root), "queue": "q"}
    return until_first_line(api, {**body, "requirements": {"packages": PACKAGES}})


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
    print(median_table(results, ("cold", "warm dl", "warm"), label_width=12))


if __name__ == "__main__":
    main()
