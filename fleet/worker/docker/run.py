"""Run a task in a container: ``python -m fleet.worker.docker.run --home H --task ID --worker W``.

The worker launches this instead of the task's command when the worker is in
docker mode (see :mod:`fleet.worker.launch`).  Like ``fleet.worker.prepare``
it is the leader of the task's process group: abort and timeout reach it as
SIGTERM, on which it stops the container (Docker's stop: SIGTERM, then
SIGKILL after part of ``fleet.stop_grace_seconds``, so the container is gone
before the worker's own SIGKILL), removes it and exits with the container's
exit code.  Its stdout is the task log: the container's output is copied line
by line, fleet's own lines start with ``[docker]``.

Decisions:

* The code is checked out on the host by the same code as outside docker
  (vcs cache, diff) and bind-mounted at the same path, so the task's
  folder and ``__file__`` paths read the same inside and out.
* The environment is built *inside* a container of the task's image with
  the image's own Python, because a venv built on the host points at the
  host's interpreter; it is kept in the venv cache and mounted read-only
  into the task's container (:mod:`fleet.worker.docker.venv`).  The pip and
  uv download caches from ``FLEET_HOME`` are mounted too
  (``docker_internal_mounts.pip_cache``, ``uv_cache``).
* The container runs a fixed entry script (:mod:`fleet.worker.docker.scripts`):
  ``extra_docker_shell_script``, then the task's setup script, then the
  environment, then ``exec "$@"`` with the task's command as its arguments,
  so no shell string is ever built from task fields.
* The container runs with Docker's init (``--init``) as PID 1, so the
  task's process gets the stop signal like outside docker (a bare PID 1
  ignores SIGTERM).
* GPUs: a ``DeviceRequest`` for exactly the task's GPUs plus
  ``NVIDIA_VISIBLE_DEVICES``; an engine without the NVIDIA runtime refuses
  the request and the task fails with that reason.
* A task of another user (``fleet.run_as_submitter``): this launcher stays
  root, the checkout and every container run as the user
  (:mod:`fleet.worker.docker.asuser`).
* How it went reaches the worker as a typed record
  (:mod:`fleet.worker.launch_outcome`), as from ``fleet.worker.prepare``: the phase
  reached and, for a failure, its kind.  No disk space for the task's
  environment is :attr:`~fleet.worker.launch_outcome.Failure.NO_SPACE`, so a docker
  task is put back and its worker backs off exactly as for a prepared one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import docker
from docker.errors import DockerException

from fleet.core.config import Config, load_config
from fleet.core.errors import FleetError
from fleet.core.home import Home
from fleet.core.models import Task
from fleet.core.secrets import secret_values
from fleet.store import open_store
from fleet.worker.docker import asuser
from fleet.worker.docker.args import (
    LABEL_HOME,
    LABEL_HOST,
    LABEL_PID,
    LABEL_TASK,
    LABEL_WORKER,
    ContainerSpec,
    choose_image,
    container_name,
    parse_docker_args,
)
from fleet.worker.docker.cleanup import remove_orphans
from fleet.worker.docker.container import EXIT_FAILED, DockerRunError, Stopper, ensure_image, run_container
from fleet.worker.docker.scripts import RUN_DIR, requirements_for, say, write_run_dir
from fleet.worker.docker.venv import DockerEnvironment, EnvironmentBuildFailed, docker_environment
from fleet.worker.envs import Log
from fleet.worker.envs.settings import downloads_dir
from fleet.worker.launch import WORKER_DOCKER_ARGS, cuda_environment
from fleet.worker.launch_outcome import Failure, LaunchOutcome, Phase, outcome_path, write_outcome
from fleet.worker.prepare import NoSpaceForEnvironment, PrepareError, Preparer
from fleet.worker.runas import run_as, unsafe_docker_argument
from fleet.worker.taskenv import device_environment
from fleet.worker.userarea import UserArea, ensure_area

log = logging.getLogger(__name__)


class Progress:
    """The phase a docker launch has reached (for its launch record)."""

    def __init__(self) -> None:
        self.phase = Phase.START


def build_spec(
    task: Task,
    worker_id: str,
    worker_image: str,
    config: Config,
    home: Home,
    folder: Path,
    mounts: list[Path],
    run_dir: Path,
    rand: str | None = None,
    worker_args: Sequence[str] = (),
    area: UserArea | None = None,
) -> ContainerSpec:
    """The container for ``task``; ``mounts`` are host folders bound at the same path (the code).
    ``area``: the task runs as its submitter, whose folders these are (:mod:`.asuser`)."""
    agent = config.agent
    image, args = choose_image(
        task.docker, worker_image, agent.default_docker.image, agent.default_docker.arguments, worker_args
    )
    opts = parse_docker_args([*args, *agent.extra_docker_arguments], os.environ)
    env: dict[str, str] = {**cuda_environment(config), **task.env}
    env.update(opts.environment)
    env.update(device_environment(task))
    env.update({"FLEET_TASK_ID": task.id, "FLEET_WORKER_ID": worker_id, "PYTHONUNBUFFERED": "1"})
    volumes: dict[str, dict[str, str]] = {str(p): {"bind": str(p), "mode": "rw"} for p in mounts}
    volumes[str(run_dir)] = {"bind": RUN_DIR, "mode": "ro"}
    volumes.update(cache_volumes(home, config) if area is None else asuser.cache_volumes(area, config))
    volumes.update(opts.volumes)
    labels = {
        **opts.labels,
        LABEL_TASK: task.id,
        LABEL_WORKER: worker_id,
        LABEL_HOST: socket.gethostname(),
        LABEL_HOME: str(home.root),
        LABEL_PID: str(os.getpid()),
    }
    spec = ContainerSpec(
        image=image,
        command=["sh", f"{RUN_DIR}/entry.sh", "run", *task.script.command],
        name=opts.name or container_name(agent.docker_container_name_format, task.id, worker_id, rand),
        labels=labels,
        environment=env,
        volumes=volumes,
        working_dir=opts.working_dir or str(folder),
        gpus=list(task.gpu_uuids) if len(task.gpu_uuids) == len(task.gpus) else [str(g) for g in task.gpus],
        ipc_mode=opts.ipc_mode,
        shm_size=opts.shm_size,
        network_mode=opts.network_mode,
        options=opts.options,
        shown_args=opts.shown,
    )
    return spec if area is None else asuser.as_user(spec, area)


def cache_volumes(home: Home, config: Config) -> dict[str, dict[str, str]]:
    """The download caches mounted into containers, where ``docker_internal_mounts`` says:
    pip's (``docker_pip_cache``, else ``$FLEET_HOME/cache/pip``), uv's and poetry's
    (``$FLEET_HOME/cache/``), and apt's when ``docker_apt_cache`` names a host folder."""
    agent = config.agent
    inside = agent.docker_internal_mounts
    caches = downloads_dir(home, agent)
    hosts: list[tuple[str, Path, str]] = []
    if agent.docker_pip_cache:
        hosts.append(("pip_cache", Path(agent.docker_pip_cache).expanduser(), "/root/.cache/pip"))
    elif caches is not None:
        hosts.append(("pip_cache", caches / "pip", "/root/.cache/pip"))
    if caches is not None:
        hosts.append(("uv_cache", caches / "uv", "/root/.cache/uv"))
        hosts.append(("poetry_cache", caches / "poetry", "/root/.cache/pypoetry"))
    if agent.docker_apt_cache:
        hosts.append(("apt_cache", Path(agent.docker_apt_cache).expanduser(), "/var/cache/apt/archives"))
    volumes: dict[str, dict[str, str]] = {}
    for key, host, default in hosts:
        host.mkdir(parents=True, exist_ok=True)
        volumes[str(host)] = {"bind": str(inside.get(key) or default), "mode": "rw"}
    return volumes


def run_task(
    home: Home,
    config: Config,
    task: Task,
    worker_id: str,
    worker_image: str,
    stopper: Stopper | None = None,
    progress: Progress | None = None,
) -> int:
    """The whole docker path for one task (worker and ``execute --docker``)."""
    agent = config.agent
    progress = progress or Progress()
    progress.phase = Phase.IMAGE
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        raise DockerRunError(f"docker mode: the docker engine is unreachable: {exc}") from None
    store = open_store(home, config.fleet.store.url)
    try:
        removed = remove_orphans(client, socket.gethostname(), str(home.root), store)
    finally:
        store.close()
    if removed:
        say(f"removed {len(removed)} orphan container(s): {', '.join(removed)}")
    out = Log(lambda text: print(text, flush=True))
    area = user_area(home, config, task)
    progress.phase = Phase.CODE
    try:
        if area is None:
            root, folder = Preparer(home, config, out).code(task, home.work / task.id)
        else:
            root, folder = asuser.checkout(area, config, task, out)
    except PrepareError as exc:
        raise DockerRunError(exc.message) from None
    run_dir = home.work / f"{task.id}.docker"
    requirements = requirements_for(task, root)
    write_run_dir(run_dir, task, config, requirements)
    worker_args = json.loads(os.environ.get(WORKER_DOCKER_ARGS) or "[]")
    spec = build_spec(
        task,
        worker_id,
        worker_image,
        config,
        home,
        folder,
        [root or folder],
        run_dir,
        worker_args=worker_args,
        area=area,
    )
    hide = agent.hide_docker_command_env_vars
    secrets = secret_values(
        spec.environment,
        hide.extra_keys,
        [agent.git_pass, config.fleet.api.token, os.environ.get("FLEET_API_TOKEN", "")],
    )
    say(spec.shown(hide.extra_keys, secrets, hide=hide.enabled))
    # Docker takes whole seconds; leave the last second of the worker's grace for the removal.
    timeout = float(max(0, math.floor(config.fleet.stop_grace_seconds) - 1))
    stopper = stopper or Stopper(timeout)
    stopper.timeout = timeout
    environment: DockerEnvironment | None = None
    try:
        progress.phase = Phase.IMAGE
        ensure_image(client, spec.image, agent.docker_force_pull)
        if requirements is not None:
            progress.phase = Phase.ENVIRONMENT

            def run(build: ContainerSpec) -> int:
                return run_container(client, build, stop_timeout=timeout, stopper=stopper)

            image_id = str(client.images.get(spec.image).id)
            try:
                environment = docker_environment(
                    home, config, task.id, image_id, requirements, run_dir, spec, run, area=area
                )
            except EnvironmentBuildFailed as exc:
                raise DockerRunError(str(exc)) from None
            record_environment(home, config, task.id, environment)
            spec = with_environment(spec, environment.path)
        progress.phase = Phase.TASK
        return run_container(client, spec, stop_timeout=timeout, stopper=stopper)
    finally:
        if environment is not None:
            environment.release()
        shutil.rmtree(run_dir, ignore_errors=True)


def user_area(home: Home, config: Config, task: Task) -> UserArea | None:
    """The submitter's folders when the task runs as its submitter (:mod:`.asuser`), after
    a last look at its own docker arguments (refused at submit already); else None."""
    who = run_as(config, task.user)
    if who is None:
        return None
    why = unsafe_docker_argument(task.docker.args if task.docker is not None else ())
    if why is not None:
        raise DockerRunError(f"docker mode: a task of {who.user} runs as {who.user}, and {why}")
    return ensure_area(home, config, who)


def with_environment(spec: ContainerSpec, venv: Path) -> ContainerSpec:
    """The task's container with its environment mounted read-only at the path it was built at."""
    volumes = {**spec.volumes, str(venv): {"bind": str(venv), "mode": "ro"}}
    return dataclasses.replace(spec, volumes=volumes, environment={**spec.environment, "FLEET_VENV": str(venv)})


def record_environment(home: Home, config: Config, task_id: str, environment: DockerEnvironment) -> None:
    store = open_store(home, config.fleet.store.url)
    try:
        store.record_environment(
            task_id, environment.cached, environment.frozen, environment.manager, environment.python
        )
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet.worker.docker.run")
    parser.add_argument("--home", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--worker", required=True)
    parser.add_argument("--image", default="", help="the worker's image (up --docker IMAGE)")
    parser.add_argument("--config", default=None)
    args = parser.parse_args(argv)
    stopper = Stopper(5.0)
    signal.signal(signal.SIGTERM, stopper)
    signal.signal(signal.SIGINT, stopper)
    progress = Progress()
    report: Path | None = None

    def failed(message: str, exc: BaseException | None = None, failure: Failure | None = None) -> int:
        print(message, flush=True)
        if report is not None:
            write_outcome(report, LaunchOutcome.failed(progress.phase, message, exc, failure))
        return EXIT_FAILED

    try:
        config = load_config(args.config)
        home = Home(Path(args.home))
        store = open_store(home, config.fleet.store.url)
        task = store.get_task(args.task)
        store.close()
        report = outcome_path(home.root, task.id, task.attempt)
        code = run_task(home, config, task, args.worker, args.image, stopper, progress)
    except NoSpaceForEnvironment as exc:
        return failed(exc.message, failure=Failure.NO_SPACE)
    except FleetError as exc:
        return failed(exc.message)
    except (OSError, DockerException) as exc:
        return failed(f"docker mode failed: {exc}", exc)
    write_outcome(report, LaunchOutcome(Phase.TASK, True))  # the container ran: its exit code is the task's
    return code


if __name__ == "__main__":
    sys.exit(main())
