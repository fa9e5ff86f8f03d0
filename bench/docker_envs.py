"""Docker mode: from enqueue to the task's first line, in a container.

A docker worker (``up --cpu-only --docker IMAGE``) in a fresh ``FLEET_HOME``
runs a task that imports ``six`` and ``rich`` (pure Python, five wheels with
their dependencies).  The wheels are downloaded once on the host and offered
to pip inside the container as a local folder (``PIP_FIND_LINKS``,
``PIP_NO_INDEX``), so the figures are the cost of containers, venvs and
installs, not of the network:

- bare:   a task with no requirements (container start through fleet)
- cold:   the environment is built (a build container of the image), then the task's container
- warm:   the same requirements again: the cached environment is mounted as is

Baseline, in the same run, with the same image and wheels: ``docker run IMAGE
python3 -c ...`` (bare) and ``docker run IMAGE sh -c "python3 -m venv ... &&
pip install ... && python ..."`` (cold; plain docker has no "warm").

The image defaults to the one the tests assemble from this host's Python
(:mod:`tests.dockerimage`); ``--image`` names another (it needs ``python3``
with ``venv`` and pip).

Run:  .venv/bin/python -m bench.docker_envs [--repeat 3] [--image IMAGE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import httpx

from bench._common import CONFIG, TempFleet, first_line, machine, median_table, temp_fleet, until_first_line

PACKAGES = ["six", "rich"]
CODE = "import six, rich, time; print('FIRST' + '-LINE', time.time(), flush=True)"
BARE = "import time; print('FIRST' + '-LINE', time.time(), flush=True)"
WHEELS_AT = "/fleet-bench-wheels"


def download(folder: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(folder), *PACKAGES],
        check=True,
    )


def through_fleet(fleet: TempFleet, api: httpx.Client, code: str, packages: list[str]) -> tuple[float, bool]:
    body: dict[str, object] = {"command": ["python3", "-c", code], "working_dir": str(fleet.root), "queue": "q"}
    if packages:
        body["requirements"] = {"packages": packages}
    return until_first_line(api, body)


def fleet_runs(image: str, wheels: Path) -> dict[str, float]:
    args = ["--network=none", "-v", f"{wheels}:{WHEELS_AT}:ro", "-e", f"PIP_FIND_LINKS={WHEELS_AT}"]
    args += ["-e", "PIP_NO_INDEX=1"]
    with temp_fleet() as fleet:
        agent = f"agent {{\n  extra_docker_arguments: {json.dumps(args)}\n}}\n"
        (fleet.root / "fleet.conf").write_text(CONFIG + agent)
        fleet.fleetctl("up", "--port", "0", "--cpu-only", "--queue", "q", "--create-queue", "--docker", image)
        with fleet.api() as api:
            fleet.wait_idle(api, 1)
            bare, _ = through_fleet(fleet, api, BARE, [])
            cold, cached = through_fleet(fleet, api, CODE, PACKAGES)
            assert not cached
            warm, cached = through_fleet(fleet, api, CODE, PACKAGES)
            assert cached
            print(f"  {machine(api)}")
    return {"bare": bare, "cold": cold, "warm": warm}


def baseline_runs(client: docker.DockerClient, image: str, wheels: Path) -> dict[str, float]:
    volumes = {str(wheels): {"bind": WHEELS_AT, "mode": "ro"}}
    env = {"PIP_FIND_LINKS": WHEELS_AT, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    t0 = time.time()
    out = client.containers.run(image, ["python3", "-c", BARE], remove=True, network_mode="none")
    bare = first_line(bytes(out).decode()) - t0
    script = f'python3 -m venv /v && /v/bin/pip install -q {" ".join(PACKAGES)} && /v/bin/python -c "{CODE}"'
    t0 = time.time()
    out = client.containers.run(
        image, ["sh", "-c", script], remove=True, network_mode="none", volumes=volumes, environment=env
    )
    cold = first_line(bytes(out).decode()) - t0
    return {"bare": bare, "cold": cold}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs of everything; the median is shown (default 3)")
    parser.add_argument("--image", default="", help="the image (default: the tests' image, built when missing)")
    args = parser.parse_args()
    client = docker.from_env(timeout=120)
    if args.image:
        image = args.image
    else:
        from tests.dockerimage import ensure_image

        image = ensure_image(client)
    wheels = Path(tempfile.mkdtemp(prefix="fleet-bench-wheels-"))
    try:
        download(wheels)
        count = len(list(wheels.glob("*.whl")))
        results: dict[str, list[dict[str, float]]] = {"fleet docker": [], "docker run": []}
        for n in range(args.repeat):
            print(f"run {n + 1}/{args.repeat}")
            results["docker run"].append(baseline_runs(client, image, wheels))
            results["fleet docker"].append(fleet_runs(image, wheels))
    finally:
        shutil.rmtree(wheels, ignore_errors=True)
        client.close()
    print(f"enqueue -> first line in a container of {image}; median of {args.repeat} (seconds)")
    print(f"importing {' + '.join(PACKAGES)} ({count} local wheels); bare: a task with no requirements")
    print(median_table(results, ("bare", "cold", "warm")))


if __name__ == "__main__":
    main()
