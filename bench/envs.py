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

Cached environment + code (``--git``): a task with a git repository whose
``requirements.txt`` (``six``) is already built, run ``--runs`` times on the
same commit + diff.  Latency = its first line (``time.time()`` it prints into
its log) minus the attempt's ``started_at`` in the store (the claim).
Baseline, in the same run: the same cached environment's ``bin/python``
started bare, spawn -> first line.

Run:  .venv/bin/python -m bench.envs [--repeat 2]
      .venv/bin/python -m bench.envs --git [--runs 10]
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


GIT_CODE = "import time; print('FIRST' + '-LINE', time.time(), flush=True)\n"


def git_repo(folder: Path) -> tuple[str, str]:
    """A one-commit repository with ``requirements.txt`` and ``main.py``: (url, commit)."""
    folder.mkdir()
    (folder / "requirements.txt").write_text("six\n")
    (folder / "main.py").write_text("import six\n" + GIT_CODE)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run([*git, "init", "-q", str(folder)], check=True)
    subprocess.run([*git, "-C", str(folder), "add", "."], check=True)
    subprocess.run([*git, "-C", str(folder), "commit", "-qm", "bench"], check=True)
    commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    return str(folder), commit.stdout.strip()


def bare_first_line(python: Path) -> float:
    t0 = time.time()
    out = subprocess.run([str(python), "-c", GIT_CODE], check=True, capture_output=True, text=True)
    return first_line(out.stdout) - t0


def git_runs(runs: int) -> dict[str, list[float]]:
    with temp_fleet() as fleet:
        url, commit = git_repo(fleet.root / "repo")
        fleet.up("0", "q")
        body = {
            "command": ["python", "main.py"],
            "working_dir": str(fleet.root),
            "queue": "q",
            "script": {"repo": url, "commit": commit},
        }
        with fleet.api() as api:
            fleet.wait_idle(api, 1)
            _, cached = until_first_line(api, body, from_claim=True)  # builds the environment
            assert not cached
            task_runs, bare_runs = [], []
            pythons = sorted((fleet.home / "venvs-cache").glob("*/bin/python"))
            for _ in range(runs):
                seconds, cached = until_first_line(api, body, from_claim=True)
                assert cached
                task_runs.append(seconds)
                bare_runs.append(bare_first_line(pythons[0]))
            print(f"  {machine(api)}")
    return {"fleet: claim -> first line": task_runs, "bare venv python": bare_runs}


def main_git(runs: int) -> None:
    results = git_runs(runs)
    print(f"git task, cached environment (six): claim -> first line, {runs} runs (milliseconds)")
    for label, values in results.items():
        ms = sorted(v * 1000 for v in values)
        print(f"  {label:<28} median {statistics.median(ms):7.1f}  min {ms[0]:7.1f}  max {ms[-1]:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2, help="runs of everything; the median is shown (default 2)")
    parser.add_argument("--git", action="store_true", help="the cached environment + code case only")
    parser.add_argument("--runs", type=int, default=10, help="tasks in the --git case (default 10)")
    args = parser.parse_args()
    if args.git:
        main_git(args.runs)
        return
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
