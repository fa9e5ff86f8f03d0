"""Queue commands: ``queues`` and ``queue create|delete|tag|untag``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from fleet.cli import output
from fleet.cli.context import Context
from fleet.cli.output import WIDE, Col

pass_ctx = click.make_pass_decorator(Context)


@click.command()
@WIDE
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def queues(ctx: Context, wide: bool, as_json: bool) -> None:
    """List queues with their pending and running tasks."""
    answer = ctx.client().get("/queues")["queues"]
    if as_json:
        output.emit_json(answer)
        return
    queues_table(None, answer, wide, with_ids=True)


def queues_table(title: str | None, queues: list[dict[str, Any]], wide: bool, *, with_ids: bool) -> None:
    """``queues`` (with each queue's id) and the queues of ``status``."""
    cols = [Col("QUEUE"), Col("PENDING", fixed=True, right=True), Col("RUNNING", fixed=True, right=True), Col("TAGS")]
    rows = [[q["name"], q["pending"], q["running"], ",".join(q["tags"])] for q in queues]
    if with_ids:
        cols.append(Col("ID", fixed=True))
        rows = [[*row, q["id"]] for row, q in zip(rows, queues, strict=True)]
    output.table(title, cols, rows, wide=wide)


@click.group()
def queue() -> None:
    """Create, delete and tag queues."""


@queue.command("create")
@click.argument("name")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@pass_ctx
def create(ctx: Context, name: str, tags: tuple[str, ...]) -> None:
    """Create a queue."""
    q = ctx.client().post("/queues", json={"name": name, "tags": list(tags)})
    output.info(f"created queue {q['name']} ({q['id']})")


@queue.command("delete")
@click.argument("name")
@click.option(
    "--force", is_flag=True, help="Also when tasks are queued (they go back to created) or live workers serve it."
)
@pass_ctx
def delete(ctx: Context, name: str, force: bool) -> None:
    """Delete a queue (refused while tasks wait in it or a live worker serves it, unless --force)."""
    ctx.client().request("DELETE", f"/queues/{name}", params={"force": force})
    output.info(f"deleted queue {name}")


@queue.command("tag")
@click.argument("name")
@click.argument("tags", nargs=-1, required=True)
@pass_ctx
def tag(ctx: Context, name: str, tags: tuple[str, ...]) -> None:
    """Add tags to a queue."""
    _retag(ctx, name, lambda current: current | set(tags))


@queue.command("untag")
@click.argument("name")
@click.argument("tags", nargs=-1, required=True)
@pass_ctx
def untag(ctx: Context, name: str, tags: tuple[str, ...]) -> None:
    """Remove tags from a queue."""
    _retag(ctx, name, lambda current: current - set(tags))


def _retag(ctx: Context, name: str, change: Callable[[set[str]], set[str]]) -> None:
    """Set a queue's tags to ``change(its current tags)`` and print them."""
    client = ctx.client()
    current = set(client.get(f"/queues/{name}")["tags"])
    q = client.request("PATCH", f"/queues/{name}", json={"tags": sorted(change(current))})
    output.info(f"{q['name']}: {', '.join(q['tags']) or '(no tags)'}")


COMMANDS = [queues, queue]
