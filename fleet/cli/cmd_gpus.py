"""GPU commands: ``gpu list`` and ``gpu drain|undrain HOST:INDEX [--reason TEXT]``."""

from __future__ import annotations

import urllib.parse

import click

from fleet.cli import output
from fleet.cli.context import Context
from fleet.cli.output import WIDE, Col
from fleet.service.drains import check_reason, parse_gpu_ref

pass_ctx = click.make_pass_decorator(Context)


@click.group()
def gpu() -> None:
    """List GPUs; drain a GPU (no new task gets it) or return it to service."""


@gpu.command("list")
@WIDE
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def list_gpus(ctx: Context, wide: bool, as_json: bool) -> None:
    """Every GPU fleet knows, per host, and why a drained one is drained."""
    answer = ctx.client().get("/gpus")
    if as_json:
        output.emit_json(answer)
        return
    output.table(
        None,
        [Col("GPU", fixed=True), Col("UUID"), Col("STATE", fixed=True), Col("BY"), Col("REASON")],
        (
            [
                g["name"],
                g["uuid"] or "",
                "drained" if g["drained"] else "in service",
                (g["drained"] or {}).get("source", ""),
                (g["drained"] or {}).get("reason", ""),
            ]
            for g in answer["gpus"]
        ),
        wide=wide,
    )


@gpu.command("drain")
@click.argument("name", metavar="HOST:INDEX")
@click.option("--reason", default="", help="Why (shown by status and the page).")
@pass_ctx
def drain(ctx: Context, name: str, reason: str) -> None:
    """Drain a GPU: no new task gets it; the task running on it finishes.

    HOST is the host part of worker ids; INDEX a GPU index, or GPU:SLICE for
    a MIG slice (box1:0:2)."""
    ref = parse_gpu_ref(name)
    body = {"reason": check_reason(reason)}
    answer = ctx.client().post(f"/gpus/{urllib.parse.quote(ref.name)}/drain", json=body)
    output.info(f"GPU {answer['name']} drained: {answer['reason']}")


@gpu.command("undrain")
@click.argument("name", metavar="HOST:INDEX")
@pass_ctx
def undrain(ctx: Context, name: str) -> None:
    """Return a drained GPU to service (drained by hand or for its health)."""
    ref = parse_gpu_ref(name)
    answer = ctx.client().post(f"/gpus/{urllib.parse.quote(ref.name)}/undrain")
    if answer["was"] is None:
        output.info(f"GPU {answer['gpu']} was not drained")
    else:
        output.info(f"GPU {answer['gpu']} is back in service (was drained: {answer['was']['reason']})")


COMMANDS = [gpu]
