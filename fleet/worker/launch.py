"""How a worker starts a task: the argument vector, folder and environment.

A plain command task runs its command directly, so nothing stands between
the claim and the task's first line.  This is the one place that decides
what runs; a task whose code, setup script or Python environment must be
prepared first is launched through the preparing step
(:func:`fleet.worker.prepare.become`), which prepares and then ``exec``s the
command in the same process: it is the task's process-group leader, so
abort, timeout and log capture cover the preparation too.

The preparing step runs in a fork of the worker, which has imported every
module it needs: a new interpreter (``python -m fleet.worker.prepare``) would
spend 100 ms or more starting and importing them again before the first
``git`` call, on every task.  A process with other threads (the PostgreSQL
store's connection pool) does not fork without ``exec`` (a lock another
thread held at the fork would stay held in the child), and it, or a caller
without the config in hand, launches the new interpreter, handing the task
and config over in a file (:mod:`fleet.worker.prepare_spec`).  A worker in docker mode (``Worker.options.docker``, set
by ``up --docker [IMAGE]`` or ``execute --docker``) launches every task as
``python -m fleet.worker.docker.run``, which runs the task in a container
and is the process-group leader in the same way.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from fleet.core.config import Config
from fleet.core.contain import Attempt
from fleet.core.home import Home, resolve_home
from fleet.core.models import Task, Worker
from fleet.worker.launch_outcome import LaunchKind
from fleet.worker.prepare import become, needs_preparation
from fleet.worker.prepare_spec import spec_path, write_spec
from fleet.worker.runas import RunAs, run_as
from fleet.worker.taskenv import task_environment

WORKER_DOCKER_ARGS = "FLEET_WORKER_DOCKER_ARGS"


def cuda_environment(config: Config | None) -> dict[str, str]:
    """``agent.cuda_version`` / ``cudnn_version`` as ClearML exports them (``CUDA_VERSION``,
    ``CUDNN_VERSION``); a task's own ``--env`` values win."""
    if config is None:
        return {}
    agent = config.agent
    pairs = (("CUDA_VERSION", agent.cuda_version), ("CUDNN_VERSION", agent.cudnn_version))
    return {name: value for name, value in pairs if value}


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    cwd: str
    env: dict[str, str]
    kind: LaunchKind = LaunchKind.PLAIN  # decided here, once: the runner reads it, never the argv
    # fleet.run_as_submitter: whom the process is started as (a plain task).  A prepared or
    # docker launcher starts as this process's user and gives up root itself (fleet.worker.runas).
    run_as: RunAs | None = None
    become: Callable[[], int] | None = None  # run in a fork of the worker instead of argv (prepared tasks)


def plan_launch(
    task: Task, worker: Worker, base_env: dict[str, str], *, home: Home | None = None, config: Config | None = None
) -> Launch:
    """Raise ``OSError`` when the task cannot be started here (its folder is gone).

    ``home`` and ``config`` name what the preparing step loads; without them it
    finds the home and the config file the way ``fleetctl`` does (``FLEET_HOME``,
    ``FLEET_CONFIG_FILE``)."""
    home = home or Home(resolve_home("", base_env))
    env = task_environment(task, worker, base_env)
    env.update({k: v for k, v in cuda_environment(config).items() if k not in task.env})
    env.update([Attempt(home.root, task.id, task.attempt).marker])  # how its processes are found (fleet.core.contain)
    docker = worker.options.docker
    who = run_as(config, task.user) if config is not None else None
    if who is not None and docker is None and not needs_preparation(task):
        if not os.path.isdir(task.script.working_dir):
            raise FileNotFoundError(2, f"working directory {task.script.working_dir} does not exist")
        return Launch(list(task.script.command), task.script.working_dir, who.env(env), run_as=who)
    if docker is not None:
        home.work.mkdir(parents=True, exist_ok=True, mode=0o700)
        argv = [sys.executable, "-m", "fleet.worker.docker.run", "--home", str(home.root), "--task", task.id]
        argv += ["--worker", worker.id, "--image", docker.image]
        if config is not None and config.path is not None:
            argv += ["--config", str(config.path)]
        if docker.args:  # the worker's docker arguments (daemon --docker IMAGE ARGS): env, not argv (secrets)
            env[WORKER_DOCKER_ARGS] = json.dumps(list(docker.args))
        return Launch(argv, str(home.work), env, LaunchKind.DOCKER)
    has_repo = bool(task.script.repo)
    if not has_repo and not os.path.isdir(task.script.working_dir):
        raise FileNotFoundError(2, f"working directory {task.script.working_dir} does not exist")
    if not needs_preparation(task):
        return Launch(list(task.script.command), task.script.working_dir, env)
    if who is not None:  # the preparing step gives up root itself, once it has read its hand-over
        env = who.env(env)
    cwd = str(home.work) if has_repo else task.script.working_dir
    if has_repo:
        home.work.mkdir(parents=True, exist_ok=True, mode=0o700)
    argv = [sys.executable, "-m", "fleet.worker.prepare", "--home", str(home.root), "--task", task.id]
    # see the module docstring; a task run as its submitter takes the new interpreter, whose
    # preparing step gives up root before it touches the task (fleet.worker.prepare.main)
    if config is not None and who is None and threading.active_count() == 1:
        return Launch(argv, cwd, env, LaunchKind.PREPARED, become=functools.partial(become, home, task, config))
    if config is not None:  # the task and config in hand: the preparing step need not load them (prepare_spec)
        spec = spec_path(home.root, task.id, task.attempt)
        write_spec(spec, task, config)
        argv += ["--spec", str(spec)]
    if config is not None and config.path is not None:
        argv += ["--config", str(config.path)]  # read only when the spec cannot be
    return Launch(argv, cwd, env, LaunchKind.PREPARED)
