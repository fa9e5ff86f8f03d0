"""``execute`` (run a task here, in the foreground) and ``build`` (code and
environment into a folder, with a ``run`` script).

Decision: both work on the store of this ``FLEET_HOME`` directly, whether a
manager runs or not — exactly as a worker does (workers record their results
in the store themselves).  ``execute`` is a worker of one task with its own id,
``<host>:execute``, on the same task runner as every worker
(:mod:`fleet.worker.runner`): the task goes through the same launch plan and
the same preparation as on a worker, its log is the task log (and this
terminal), and its result is recorded as an attempt, with the runner's actor
``worker:<host>:execute``.  What differs is data (its
:data:`~fleet.worker.runner.RunnerProfile`): no containment beyond the
process group (a terminal's job), and the task is never put back in a queue.
The task is started with the store's ``start_task``, as the remote executor
API starts one.  Exit code: the task's (128 + N when killed by
signal N).  GPUs: those in this shell's ``CUDA_VISIBLE_DEVICES``, else every
NVML GPU, else none.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import click

from fleet.cli.cmd_tasks import TASK
from fleet.cli.context import Context
from fleet.cli.output import printable
from fleet.core.config import Config
from fleet.core.errors import FleetError, UsageError
from fleet.core.gpuspec import parse_gpu_list
from fleet.core.home import Home
from fleet.core.models import DockerMode, Runner, Task, Worker, WorkerMode, WorkerOptions, WorkerState
from fleet.core.nvml import Nvml
from fleet.core.outcome import StopCause
from fleet.core.procs import become_subreaper
from fleet.core.tasklog import TaskLog
from fleet.service.clone import clone_spec
from fleet.store import open_store
from fleet.worker.admission import record_gpu_uuids
from fleet.worker.docker.scripts import ENTRY_POINTS
from fleet.worker.envs import Log
from fleet.worker.prepare import PrepareError, Preparer
from fleet.worker.runas import switches_user
from fleet.worker.runner import CHECK_S, RunnerProfile, TaskRunner
from fleet.worker.taskenv import task_environment

log = logging.getLogger(__name__)
pass_ctx = click.make_pass_decorator(Context)


def _host(config: Config) -> str:
    return config.agent.worker_name or socket.gethostname()


def _visible_gpus() -> list[int]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        try:
            return parse_gpu_list(visible) if visible.strip() else []
        except UsageError:
            return []
    nvml = Nvml()
    return list(range(nvml.device_count())) if nvml.available else []


class TerminalLog(TaskLog):
    """The task log, also copied to this terminal as it comes (without stamps)."""

    def feed(self, data: bytes) -> None:
        super().feed(data)
        sys.stdout.buffer.write(data)
        sys.stdout.flush()

    def note(self, text: str) -> None:
        super().note(text)
        sys.stdout.write(f"[fleet] {text}\n")
        sys.stdout.flush()


class _Signals:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1


def run_foreground(runner: TaskRunner, task: Task, worker: Worker) -> int:
    """Run a started task in this process's care (the task runner, as a worker
    runs it); a first Ctrl-C stops it, a second kills it now.  Return its
    exit code (1 when it never ran, 128 + N when killed by signal N)."""
    signals = _Signals()
    old = {s: signal.signal(s, signals) for s in (signal.SIGINT, signal.SIGTERM)}
    last_look = time.monotonic()
    seen = 0
    try:
        runner.start(task, worker)
        while runner.proc is not None:
            runner.wait((), CHECK_S)
            if signals.count > seen:
                seen = signals.count
                runner.stop(StopCause.ABORT, "interrupted (fleetctl execute)")
                if seen > 1:
                    runner.kill_now()
            look = time.monotonic() - last_look >= CHECK_S
            if look:
                last_look = time.monotonic()
            runner.watch(look)
            runner.flush()  # the task's pid, once it has run a turn
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
    while runner.ending is not None:  # the store is unavailable: keep the end until it takes it (Ctrl-C gives up)
        runner.wait((), CHECK_S)
        runner.flush()
    rc = runner.last.returncode if runner.last is not None else None
    if rc is None:
        return 1
    return rc if rc >= 0 else 128 - rc


@click.command()
@click.option("--id", "task_id", required=True, type=TASK, help="The task to run.")
@click.option("--clone", is_flag=True, help="Run a copy of the task; the original is left as it is.")
@click.option(
    "--docker",
    "in_docker",
    is_flag=True,
    help="Run it in a container (the task's image, else agent.default_docker.image).",
)
@pass_ctx
def execute(ctx: Context, task_id: str, clone: bool, in_docker: bool) -> None:
    """Run a task here, in the foreground, without a queue; exit with its exit code.

    \b
    The task is prepared exactly as on a worker (code, setup script, environment),
    its output goes to this terminal and to its log, and its result is recorded."""
    config = ctx.config
    home = ctx.home.ensure()
    store = open_store(home, config.fleet.store.url)
    host = _host(config)
    worker_id = f"{host}:execute"
    task = store.get_task(task_id)
    if clone:
        task = store.create_task(clone_spec(task), None, f"fleetctl:{worker_id}")
        click.echo(f"[fleet] running clone {task.id} of task {task.parent}", err=True)
    gpus = _visible_gpus()
    worker = Worker(
        id=worker_id,
        host=host,
        mode=WorkerMode.STATIC,
        gpus=gpus or None,
        queues=[],
        order_fairness=False,
        state=WorkerState.BUSY,
        state_reason="fleetctl execute",
        created_at=time.time(),
        options=WorkerOptions(docker=DockerMode()) if in_docker else WorkerOptions(),
    )
    become_subreaper()
    profile = RunnerProfile(worker_id, Runner.EXECUTE, contain=False, requeue=False, log=TerminalLog)
    runner = TaskRunner(home, store, config, profile)
    task = record_gpu_uuids(store, Nvml(), runner.start_here(task.id, worker, gpus))
    rc = run_foreground(runner, task, worker)
    ended = store.get_task(task.id)
    reason = f" ({printable(ended.status_reason)})" if ended.status_reason else ""
    click.echo(f"[fleet] task {ended.id} {ended.status.value}{reason}", err=True)
    store.close()
    raise SystemExit(rc)


def write_run_script(path: Path, task: Task, cwd: Path, env: dict[str, str], venv: Path | None) -> None:
    """A bash script that runs the task on its own; every value is quoted."""
    q = shlex.quote
    lines = [
        "#!/usr/bin/env bash",
        f"# Built by fleetctl build from task {task.id}: runs it with its code and environment.",
        "set -euo pipefail",
        "unset PYTHONHOME",
    ]
    if venv is not None:
        lines += [f"export VIRTUAL_ENV={q(str(venv))}", f'export PATH={q(str(venv / "bin"))}:"$PATH"']
    lines += [f"export FLEET_TASK_ID={q(task.id)}", "export PYTHONUNBUFFERED=1"]
    lines += [f"export {name}={q(value)}" for name, value in sorted(env.items())]
    lines += [f"cd {q(str(cwd))}", "exec " + " ".join(q(arg) for arg in task.script.command) + ' "$@"']
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")


@click.command()
@click.option("--id", "task_id", required=True, type=TASK, help="The task to build.")
@click.option(
    "--target",
    required=True,
    help="Folder to build into (new or empty); with --docker, the image to make (name:tag).",
)
@click.option("--docker", "in_docker", is_flag=True, help="Build a docker image instead of a folder.")
@click.option(
    "--entry-point",
    type=click.Choice(ENTRY_POINTS),
    default=None,
    help="With --docker: the image runs the task (reuse_task) or a clone of it (clone_task), "
    "reporting to the manager at FLEET_API_URL.  Without: the task's environment as a base image.",
)
@pass_ctx
def build(ctx: Context, task_id: str, target: str, in_docker: bool, entry_point: str | None) -> None:
    """Build a task's code and Python environment into a folder (with a `run`
    script), or into a docker image.

    \b
    DIR/code  the checkout (tasks with a repository)
    DIR/venv  the environment (tasks with requirements or a repository)
    DIR/run   runs the task: bash DIR/run [extra arguments]

    \b
    --docker --target IMAGE: the task's image (or agent.default_docker.image) with
    the code in /fleet/code and the environment in /fleet/venv."""
    if entry_point is not None and not in_docker:
        raise UsageError(f"--entry-point {entry_point}: only with --docker", field="entry_point")
    config = ctx.config
    home = ctx.home.ensure()
    store = open_store(home, config.fleet.store.url)
    task = store.get_task(task_id)
    store.close()
    if switches_user(config, task.user):
        # build runs the task's setup script and installs (setup.py, build backends: its code)
        # in this process's name, into a target it chose: as root, that would hand root out.
        raise UsageError(
            f"--id {task_id}: a task of {task.user}, whose tasks run as {task.user} (fleet.run_as_submitter); "
            f"build would run its setup script and installs as root: use fleetctl execute (runs it as {task.user})",
            field="id",
        )
    if in_docker:
        _build_image(home, config, task, target, entry_point)
        return
    folder = Path(target).expanduser().absolute()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"--target {folder}: expected a new or empty folder", field="target")
    folder.mkdir(parents=True, exist_ok=True)
    worker = Worker(
        id=f"{_host(config)}:build",
        host=_host(config),
        mode=WorkerMode.STATIC,
        gpus=None,
        queues=[],
        order_fairness=False,
        state=WorkerState.BUSY,
        state_reason="fleetctl build",
        created_at=time.time(),
    )
    env = task_environment(task, worker, dict(os.environ))
    out = Log(click.echo)
    try:
        prepared = Preparer(home, config, out, env).prepare(task, work=folder / "code", env_target=folder / "venv")
    except PrepareError as exc:
        raise FleetError(exc.message) from None
    venv = prepared.environment.path if prepared.environment is not None else None
    write_run_script(folder / "run", task, prepared.cwd, dict(task.env), venv)
    click.echo(f"built task {task.id} into {folder}; run it with {shlex.quote(str(folder / 'run'))}")


def _build_image(home: Home, config: Config, task: Task, target: str, entry_point: str | None) -> None:
    import docker  # only here: importing the SDK costs every other command ~80 ms
    from docker.errors import DockerException

    from fleet.worker.docker.image import build_image, parse_target

    parse_target(target)  # a bad name is refused before anything is built
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        raise FleetError(f"--docker: the docker engine is unreachable: {exc}") from None
    home.work.mkdir(parents=True, exist_ok=True, mode=0o700)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=home.work))
    try:
        built = build_image(client, home, config, task, target, entry_point, work)
    except DockerException as exc:
        raise FleetError(f"building image {target}: {exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
        client.close()
    click.echo(f"built image {built.image} ({built.image_id[:19]}) from task {task.id}")
    if entry_point is not None:
        info = home.read_manager_info() or {}
        url = shlex.quote(str(info.get("url") or "http://127.0.0.1:8765"))
        names = [*built.left_out, "FLEET_API_TOKEN"]  # the manager's token: $FLEET_HOME/api.token
        secrets = "".join(f" -e {name}" for name in names)
        click.echo(
            f"run it with: docker run --rm --init --network host -e FLEET_API_URL={url}{secrets} {shlex.quote(built.image)}"
        )


COMMANDS = [execute, build]
