"""``daemon``: ClearML Agent's spelling of ``up``, with its options as its documentation writes them.

``fleetctl daemon ARGS`` does what ``clearml-agent daemon ARGS`` does, through
the code of ``up`` (:func:`fleet.cli.cmd_up.make_request` and
:func:`~fleet.cli.cmd_up.bring_up`).  Where ClearML's options mean nothing
more here they are accepted and said so:

* ``--detached`` is fleet's default (the manager always runs detached unless
  ``--foreground``);
* ``--dynamic-gpus``: the queue specs decide (``quad=4`` makes the pool);
* ``--force-current-version``: ClearML installs itself inside each container;
  fleet never does (the container runs a fixed shell entry script and the
  task's own environment), so there is no version to pin;
* ``--queue`` defaults to ``default``, as ClearML's daemon does without one.

``--stop`` appended to a line stops exactly the worker that line started: the
manager plans the line against its live workers without changing anything
(``POST /api/v1/workers/match``) and the worker it names is stopped like
``fleetctl stop WORKER``.  A line that matches no live worker stops nothing
and exits 1.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from fleet.cli import output
from fleet.cli.cmd_up import bring_up, docker_option, make_request, pass_ctx, request_body, worker_options
from fleet.cli.cmd_workers import stop_and_wait
from fleet.cli.context import Context
from fleet.core.errors import FleetError

log = logging.getLogger(__name__)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
WHY_NO_VERSION = (
    "--force-current-version changes nothing here: fleet installs no agent inside the container "
    "(tasks run through a fixed entry script and their own environment)"
)


@click.command()
@worker_options
@click.option("--dynamic-gpus", is_flag=True, help="Accepted: queues with GPU counts make the dynamic pool.")
@docker_option(
    "[IMAGE] [ARGS ...]",
    "Run tasks in containers: IMAGE, else agent.default_docker.image; ARGS are docker run arguments.",
)
@click.option("--docker-arg", "docker_args", multiple=True, hidden=True)
@click.option("--detached", is_flag=True, help="Accepted: fleet's manager runs detached by default.")
@click.option("--force-current-version", is_flag=True, help="Accepted; changes nothing here (see the log).")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default=None,
    help="The manager's log level (when this line starts it).",
)
@click.option("--stop", "stop_it", is_flag=True, help="Stop the worker that the same line started.")
@pass_ctx
def daemon(
    ctx: Context,
    /,
    dynamic_gpus: bool,
    detached: bool,
    foreground: bool,
    force_current_version: bool,
    log_level: str | None,
    stop_it: bool,
    port: int | None,
    as_json: bool,
    **line: Any,
) -> None:
    """ClearML Agent's `daemon`: the same as `up`, spelled as ClearML writes it.

    \b
    fleetctl daemon --queue default --gpus 0 --detached
    fleetctl daemon --dynamic-gpus --gpus 0-7 --queue quad_gpu=4 dual_gpu=2
    fleetctl daemon --services-mode --queue services --create-queue --docker IMAGE --cpu-only
    fleetctl daemon --queue default --gpus 0 --detached --stop     # stops that worker
    """
    if detached and foreground:
        raise click.UsageError("--detached and --foreground exclude each other")
    request = make_request(ctx, **{**line, "queues": line["queues"] or ("default",)})
    if stop_it:
        _stop_matching(ctx, request_body(request))
        return
    if force_current_version:
        output.info(WHY_NO_VERSION)
    level = getattr(logging, log_level.upper()) if log_level else logging.INFO
    if foreground:
        if force_current_version:
            log.info(WHY_NO_VERSION)
        bring_up(ctx, request, foreground=True, port=port, as_json=as_json, log_level=level)
        return
    if log_level and ctx.running() is not None:
        output.warn(f"a manager already runs for this FLEET_HOME; --log-level {log_level} is for the one a line starts")
    bring_up(ctx, request, foreground=False, port=port, as_json=as_json, log_level=level)


def _stop_matching(ctx: Context, body: dict[str, object]) -> None:
    if ctx.running() is None:
        raise FleetError(f"no manager is running for FLEET_HOME={ctx.home.root}: no worker to stop")
    found = ctx.client().post("/workers/match", json=body)["workers"]
    if not found:
        raise FleetError("no running worker was started by this line (fleetctl status lists the workers)")
    stop_and_wait(ctx, [w["id"] for w in found], drain=False, requeue=False, timeout=None)


COMMANDS = [daemon]
