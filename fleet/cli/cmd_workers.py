"""Worker commands that only talk to the manager: ``status``, ``stop``, ``page``, ``force``."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import click

from fleet.cli import output
from fleet.cli.client import Client, pid_running
from fleet.cli.cmd_queues import queues_table
from fleet.cli.context import Context
from fleet.cli.hosts_view import hosts_table
from fleet.cli.output import WIDE, Col, short_id
from fleet.core.errors import FleetError, UsageError

pass_ctx = click.make_pass_decorator(Context)


def stop_and_wait(ctx: Context, workers: list[str], drain: bool, requeue: bool, timeout: float | None) -> None:
    """Stop these workers and wait until each is dead."""
    client = ctx.client()
    for wid in workers:
        client.request("DELETE", f"/workers/{quote(wid, safe='')}", params={"drain": drain, "requeue": requeue})
    deadline = None if timeout is None else time.monotonic() + timeout
    for wid in workers:
        while client.get(f"/workers/{quote(wid, safe='')}")["state"] != "dead":
            if deadline is not None and time.monotonic() > deadline:
                raise FleetError(f"worker {wid} is still stopping after {timeout:g}s")
            time.sleep(0.1)
        output.info(f"stopped {wid}")


@click.command()
@click.argument("workers", nargs=-1)
@click.option("--drain", is_flag=True, help="Stop pulling and wait for running tasks to finish.")
@click.option("--requeue", is_flag=True, help="Put stopped tasks back at the head of their queue.")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, help="Give up waiting after SECONDS.")
@pass_ctx
def stop(ctx: Context, workers: tuple[str, ...], drain: bool, requeue: bool, timeout: float | None) -> None:
    """Stop workers; with none named, stop every worker and the manager.

    Running tasks get SIGTERM, then SIGKILL after the grace period, and end
    `stopped`; --drain lets them finish instead.
    """
    found = ctx.running()
    if found is None:
        output.info(f"no manager is running for FLEET_HOME={ctx.home.root}")
        return
    client = ctx.client()
    if not workers:
        client.post("/shutdown", json={"drain": drain, "requeue": requeue})
        pid = found.pid or int(client.get("/health")["pid"])
        if drain:
            output.info("draining: waiting for running tasks to finish")
        if not wait_gone(pid, timeout):
            raise FleetError(f"the manager (pid {pid}) is still stopping after {timeout:g}s")
        output.info("stopped all workers and the manager")
        return
    stop_and_wait(ctx, list(workers), drain, requeue, timeout)


def wait_gone(pid: int, timeout: float | None) -> bool:
    """Wait until process ``pid`` has exited (a zombie counts as gone); False on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while pid_running(pid):
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Include stopped (dead) workers.")
@click.option("--host", help="Only this host's workers (default: every host of the fleet).")
@WIDE
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def status(ctx: Context, show_all: bool, host: str | None, wide: bool, as_json: bool) -> None:
    """Hosts, workers, queues and the manager's address (every host; --host NAME: one).

    On a store shared by many hosts every host's workers are listed, grouped
    by host; queues are the fleet's."""
    client = ctx.client()
    health = client.get("/health")
    params: dict[str, Any] = {"all": show_all, **({"host": host} if host is not None else {})}
    workers = sorted(client.get("/workers", params=params)["workers"], key=lambda w: (w["host"], w["id"]))
    queues = client.get("/queues")["queues"]
    hosts = [h for h in client.get("/hosts")["hosts"] if host is None or h["name"] == host]
    if as_json:
        output.emit_json({"manager": health, "hosts": hosts, "workers": workers, "queues": queues})
        return
    output.info(f"manager: {health['url']} (pid {health['pid']}, host {health['host']}, home {health['home']})")
    output.info(f"config: {health.get('config') or 'built-in defaults (no config file found)'}")
    cuda = [f"{k} {health[k]}" for k in ("cuda_version", "cudnn_version") if health.get(k)]
    if cuda:
        output.info(f"agent: {', '.join(cuda)}")
    output.info(f"page: {_login_url(client)}  (one-time login link)")
    hosts_table(workers, hosts, wide)
    workers_table(workers, wide)
    queues_table("Queues", queues, wide, with_ids=False)


@click.command()
@pass_ctx
def page(ctx: Context) -> None:
    """Print a one-time login link to the web page (good for 2 minutes, once)."""
    click.echo(_login_url(ctx.client()))


def _login_url(client: Client) -> str:
    """A URL that logs the page in as you; the code is in the fragment, which the
    browser never sends to a server, and the page removes it from its history."""
    return str(client.post("/login/codes")["url"])


def workers_table(workers: list[dict[str, Any]], wide: bool = False) -> None:
    """One row per worker; a worker's id is never shortened (``stop`` and ``force`` take it)."""
    output.table(
        "Workers",
        [Col("WORKER", fixed=True), Col("GPUS"), Col("QUEUES"), Col("STATE", fixed=True), Col("TASK"), Col("REASON")],
        (
            [
                w["id"],
                ",".join(map(str, w["gpus"])) or "cpu",
                " ".join(w.get("queue_specs") or w["queues"]) + (" (fair)" if w["order_fairness"] else ""),
                w["state"] if w["mode"] == "static" else f"{w['state']} ({w['mode']})",
                ",".join(short_id(t, wide) for t in w["tasks"]),
                w["state_reason"],
            ]
            for w in workers
        ),
        wide=wide,
    )
    for w in workers:
        _pool_lines(w, wide)
        for gpu, why in (w.get("drained") or {}).items():
            output.info(f"{w['id']}: GPU {gpu} drained: {why}")


def _pool_lines(worker: dict[str, Any], wide: bool) -> None:
    """A pool's running tasks, reservations, busy GPUs and why each queue waits."""
    pool = worker.get("pool") or {}
    if not any(pool.get(k) for k in ("children", "reservations", "busy", "waiting")):
        return
    output.info(f"{worker['id']}:")
    for child in pool.get("children", []):
        gpus = ",".join(map(str, child["gpus"])) or "no GPUs"
        output.info(f"  running  {child['worker']}  task {short_id(child['task'], wide)} ({child['queue']}, {gpus})")
    for res in pool.get("reservations", []):
        held = ",".join(map(str, res["gpus"])) or "none yet"
        output.info(
            f"  reserved for {res['queue']} task {short_id(res['task'], wide)} (needs {res['need']}): GPUs {held}"
        )
    for gpu, why in sorted(pool.get("busy", {}).items(), key=lambda kv: [int(p) for p in kv[0].split(":")]):
        output.info(f"  GPU {gpu} skipped: {why}")
    for queue, why in pool.get("waiting", {}).items():
        output.info(f"  {queue} waits: {why}")


@click.command()
@click.argument("worker")
@click.argument("action", type=click.Choice(["on", "off", "clear"]))
@click.option("--expiry", type=click.FloatRange(min=0, min_open=True), help="Seconds until it lapses (default: never).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def force(ctx: Context, worker: str, action: str, expiry: float | None, as_json: bool) -> None:
    """Force a worker on or off, over its schedule (a runtime property); `clear` removes it.

    Queue tags force_workers:on|off still win over this.
    """
    client = ctx.client()
    path = f"/workers/{quote(worker, safe='')}/runtime-properties/force"
    if action == "clear":
        if expiry is not None:
            raise UsageError("--expiry: not valid with clear", field="expiry")
        answer = client.request("DELETE", path)
    else:
        answer = client.request("PUT", path, json={"value": action, "expiry": expiry})
    state = client.get(f"/workers/{quote(worker, safe='')}")
    if as_json:
        output.emit_json(state)
        return
    prop = answer["runtime_properties"].get("force")
    told = (
        f"force:{prop['value']}" + (f" until {prop['expires_at']}" if prop["expires_at"] else "")
        if prop
        else "no force"
    )
    output.info(f"{state['id']}: {told}; now {state['state']} ({state['state_reason']})")


COMMANDS = [stop, status, page, force]
