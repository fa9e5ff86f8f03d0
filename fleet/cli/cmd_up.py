"""``up`` and the hidden ``manager`` command: they act on this host (start a manager).

The manager (uvicorn, the store, the scheduler) is imported only where one is
started or served here, so ``up`` against a running manager stays a client.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from fleet.cli import output
from fleet.cli.cmd_workers import wait_gone, workers_table
from fleet.cli.context import Context
from fleet.core.errors import FleetError, UsageError
from fleet.core.gpuspec import parse_gpu_list, resolve_gpus
from fleet.core.home import Home
from fleet.core.nvml import Nvml
from fleet.core.validate import worker_id as check_worker_id
from fleet.policy.hours import HELP as SCHEDULE_HELP
from fleet.policy.hours import make_schedule
from fleet.policy.queuespec import QueueSpec, is_dynamic
from fleet.policy.upplan import UpRequest, check_pool_size, check_request, no_pool_gpus

pass_ctx = click.make_pass_decorator(Context)


NO_LIMIT = -1  # `--services-mode` given without MAX


def _check_gpus(spec: str | None, specs: list[QueueSpec]) -> None:
    """The GPU checks that need no manager, so a bad `up` starts nothing."""
    if spec is None:
        nvml = Nvml()
        if is_dynamic(specs) and not (nvml.available and nvml.device_count() > 0):
            raise no_pool_gpus()
        return
    gpus = resolve_gpus(spec, Nvml())[0] if spec.strip().lower() == "all" else parse_gpu_list(spec)
    if is_dynamic(specs):
        check_pool_size(specs, len(gpus), spec)


F = TypeVar("F", bound=Callable[..., Any])

# The options `up` and `daemon` share (daemon adds ClearML's own and its --docker form).
_WORKER_OPTIONS = (
    click.option("--gpus", metavar="SPEC", help="GPUs for this worker: 0, 0,1, 0-7, 0-3,6 or all."),
    click.option(
        "--queue", "queues", multiple=True, metavar="Q [Q ...]", help="Queues to pull from, in priority order."
    ),
    click.option("--order-fairness", is_flag=True, help="Pull from the queues in turn instead of in strict order."),
    click.option("--cpu-only", is_flag=True, help="A worker without GPUs (CUDA_VISIBLE_DEVICES is empty)."),
    click.option(
        "--services-mode",
        "services_mode",
        type=int,
        is_flag=False,
        flag_value=NO_LIMIT,
        default=None,
        metavar="[MAX]",
        help="Launch each task and go on pulling, up to MAX at once (no limit without MAX); CPU-only.",
    ),
    click.option("--create-queue", is_flag=True, help="Create queues that do not exist yet."),
    click.option(
        "--uptime",
        multiple=True,
        metavar='"HOURS DAYS" ...',
        help="Pull only during these hours (forms: `fleetctl up --help`).",
    ),
    click.option("--downtime", multiple=True, metavar='"HOURS DAYS" ...', help="Pull except during these hours."),
    click.option("--foreground", is_flag=True, help="Run the manager in this terminal, logging to the console."),
    click.option("--port", type=click.IntRange(0, 65535), help="API port (0 takes any free port). Default 8765."),
    click.option("--json", "as_json", is_flag=True, help="Print the workers as JSON."),
)


def worker_options(command: F) -> F:
    """Add the options ``up`` and ``daemon`` share, in this order in their help."""
    for option in reversed(_WORKER_OPTIONS):
        command = option(command)
    return command


def docker_option(metavar: str, help: str) -> Callable[[F], F]:
    """``--docker [IMAGE]``: the flag alone takes the configured image."""
    return click.option("--docker", "docker_image", is_flag=False, flag_value="", metavar=metavar, help=help)


@click.command()
@worker_options
@docker_option(
    "[IMAGE]", "Run every task in a container: the task's image, else IMAGE, else agent.default_docker.image."
)
@pass_ctx
def up(ctx: Context, /, foreground: bool, port: int | None, as_json: bool, **line: Any) -> None:
    """Start this host's manager if needed and add a worker.

    Queues given as bare names make a static worker for the GPU group.  A
    queue with a GPU count makes a dynamic pool that gives each task its own
    GPUs: NAME=N (N GPUs), NAME=MIN-MAX (as many as are free, MIN to MAX),
    NAME=-MAX (1 to MAX); a bare name beside them serves each task with its
    own --gpus count (default 1).

    \b
    fleetctl up --gpus 0-3 --queue default --create-queue
    fleetctl up --gpus 4,5 --queue high low --order-fairness
    fleetctl up --cpu-only --queue cpu
    fleetctl up --gpus 0-7 --queue quad=4 dual=2 opportunistic=1-4 any
    fleetctl up --services-mode 10 --queue services
    fleetctl up --gpus 0 --queue night --uptime "20-00,00-08 SUN" "18-08 MON-FRI"
    """
    bring_up(ctx, make_request(ctx, **line), foreground=foreground, port=port, as_json=as_json)


def make_request(
    ctx: Context,
    *,
    queues: tuple[str, ...],
    gpus: str | None,
    cpu_only: bool,
    order_fairness: bool,
    create_queue: bool,
    services_mode: int | None,
    docker_image: str | None,
    uptime: tuple[str, ...],
    downtime: tuple[str, ...],
    docker_args: tuple[str, ...] = (),
) -> UpRequest:
    """An ``up``/``daemon`` line (the options they share, as click passes them) as a
    request, checked as far as it can be without a manager.

    The worker's name and id are this command's (its environment and config
    file), so they apply on every ``up``, not only the one that started the manager."""
    config = ctx.config  # a bad config fails here, before anything starts
    from_config = not uptime and not downtime
    if services_mode is not None and services_mode < 1 and services_mode != NO_LIMIT:
        raise UsageError(
            f"--services-mode {services_mode}: expected at least 1 (or no value: no limit)", field="services_max"
        )
    if docker_args and docker_image is None:
        raise UsageError("docker arguments need --docker", field="docker_args")
    request = UpRequest(
        queues=list(queues),
        gpus=gpus,
        cpu_only=cpu_only,
        order_fairness=order_fairness,
        create_queue=create_queue,
        uptime=list(config.agent.uptime if from_config else uptime),
        downtime=list(config.agent.downtime if from_config else downtime),
        schedule_field="agent." if from_config else "--",
        services=services_mode is not None,
        services_max=services_mode if services_mode is not None and services_mode >= 1 else None,
        docker=docker_image,
        docker_args=list(docker_args),
        worker_name=config.agent.worker_name,
        worker_id=config.agent.worker_id,
    )
    for key, value in (("agent.worker_name", request.worker_name), ("agent.worker_id", request.worker_id)):
        if value:
            check_worker_id(value, key)
    specs = check_request(request)
    _check_gpus(gpus, specs)
    make_schedule(request.uptime, request.downtime, request.schedule_field)
    if docker_args:
        from fleet.worker.docker.args import parse_docker_args  # docker's own types: only when asked

        parse_docker_args(list(docker_args))  # refuse what docker mode cannot express, before anything starts
    return request


def request_body(request: UpRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "queues": request.queues,
        "gpus": request.gpus,
        "cpu_only": request.cpu_only,
        "services_mode": request.services,
        "services_max": request.services_max,
        "order_fairness": request.order_fairness,
        "create_queue": request.create_queue,
        "uptime": request.uptime,
        "downtime": request.downtime,
        "worker_name": request.worker_name,
        "worker_id": request.worker_id,
    }
    if request.docker is not None:
        body["docker"] = request.docker
        body["docker_args"] = request.docker_args
    return body


def bring_up(
    ctx: Context,
    request: UpRequest,
    *,
    foreground: bool,
    port: int | None,
    as_json: bool,
    log_level: int = logging.INFO,
) -> None:
    """Start the manager if none runs for this home (or run it here with ``foreground``) and add the worker."""
    from fleet.manager.daemon import Manager, check_bind, configure_logging

    config = ctx.config
    check_bind(config.fleet.api.host, config.fleet.api.token)
    if foreground:
        configure_logging(None, log_level)
        raise SystemExit(Manager(ctx.home, config, port=port).serve(request))
    started_pid: int | None = None
    if ctx.running() is None:
        started_pid = ctx.start_manager(port, log_level)
    elif port is not None:
        output.warn("a manager already runs for this FLEET_HOME; --port is ignored")
    client = ctx.client()
    try:
        answer = client.post("/workers", json=request_body(request))
    except FleetError:
        if started_pid is not None:  # leave nothing behind that this failed `up` started
            client.post("/shutdown", json={})
            wait_gone(started_pid, 30)
        raise
    for warning in answer["warnings"]:
        output.warn(warning)
    if as_json:
        output.emit_json(answer["workers"])
        return
    workers_table(answer["workers"])
    output.info(f"manager: {client.base_url}")


@click.command(hidden=True)
@click.option("--home", "home_dir", required=True, type=click.Path(file_okay=False))
@click.option("--port", type=click.IntRange(0, 65535))
@click.option("--log-level", "log_level", type=int, default=logging.INFO)
@pass_ctx
def manager(ctx: Context, home_dir: str, port: int | None, log_level: int) -> None:
    """Run a manager with no initial workers (what `up` starts detached)."""
    from fleet.manager.daemon import Manager, configure_logging

    configure_logging(None, log_level)
    logging.getLogger(__name__).info("manager starting for %s", home_dir)
    raise SystemExit(Manager(Home(Path(home_dir)), ctx.config, port=port).serve())


up.help = inspect.cleandoc(up.help or "") + "\n\n\b\n" + SCHEDULE_HELP


COMMANDS = [up, manager]
