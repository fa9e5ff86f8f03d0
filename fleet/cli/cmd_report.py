"""``fleetctl report``: GPU-hours, tasks and queue waits over a window."""

from __future__ import annotations

import csv
import sys
import time
from typing import Any

import click

from fleet.cli import output, when
from fleet.cli.context import Context
from fleet.cli.output import WIDE, Col
from fleet.metrics.report import BY
from fleet.metrics.timespec import window

pass_ctx = click.make_pass_decorator(Context)

COLUMNS = [
    ("key", "KEY"),
    ("busy_gpu_hours", "BUSY"),
    ("idle_gpu_hours", "IDLE"),
    ("paused_gpu_hours", "PAUSED"),
    ("task_hours", "TASKH"),
    ("completed", "DONE"),
    ("failed", "FAIL"),
    ("stopped", "STOP"),
    ("success_rate", "OK%"),
    ("wait_p50_s", "WAIT50"),
    ("wait_p95_s", "WAIT95"),
    ("busy_gpu_util_percent", "UTIL"),
]


def seconds(value: float | None) -> str:
    """``0.42`` -> ``420ms``, ``75`` -> ``1m15s``, ``7300`` -> ``2h01m``."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{int(value // 3600)}h{int(value % 3600 // 60):02d}m"


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "success_rate":
        return f"{value * 100:.1f}%"
    if key.startswith("wait_"):
        return seconds(value)
    if key.endswith("_hours"):
        return f"{value:.2f}"
    if key.endswith("_percent"):
        return f"{value:.0f}%"
    return str(value)


def flat_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row, then the rows nested under it (a pool's per-task workers, ``--by worker``)."""
    return [r for row in rows for r in (row, *row.get("children", []))]


def _key(row: dict[str, Any]) -> str:
    """A nested row's key is indented under its parent's."""
    return f"  └ {row['key']}" if row.get("parent") else str(row["key"])


def _summary(answer: dict[str, Any]) -> None:
    t = answer["totals"]
    hours = ", ".join(f"{w} {_cell('x_hours', t[f'{w}_gpu_hours'])}" for w in ("busy", "idle", "paused"))
    rows = [
        ("window", f"{when.full(answer['since'])} .. {when.full(answer['until'])}"),
        ("hosts", answer.get("host") or "every host"),
        ("GPU-hours", hours),
        ("task-hours", _cell("x_hours", t["task_hours"])),
        ("tasks", f"completed {t['completed']}, failed {t['failed']}, stopped {t['stopped']}"),
        ("success rate", _cell("success_rate", t["success_rate"])),
        ("queue wait", f"p50 {seconds(t['wait_p50_s'])}, p95 {seconds(t['wait_p95_s'])} ({t['waits']} starts)"),
        ("busy GPU utilization", _cell("x_percent", t["busy_gpu_util_percent"])),
    ]
    if t["busy_low_util_gpu_hours"] is not None:
        rows.append(("busy GPU-hours under 10%", _cell("x_hours", t["busy_low_util_gpu_hours"])))
    output.table(None, [Col("REPORT", fixed=True), Col("", fixed=True)], rows)


@click.command()
@click.option("--since", default="24h", show_default=True, help="Start: a duration before now (24h, 7d) or a date.")
@click.option("--until", default=None, help="End (default: now); same forms as --since.")
@click.option(
    "--by",
    type=click.Choice(BY),
    default="gpu",
    show_default=True,
    help="One row per GPU, host, worker (a pool's per-task workers under it), queue or user.",
)
@click.option("--host", help="Only this host's workers and tasks (default: every host of the fleet).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the rows (and the total) as CSV.")
@WIDE
@pass_ctx
def report(
    ctx: Context, since: str, until: str | None, by: str, host: str | None, as_json: bool, as_csv: bool, wide: bool
) -> None:
    """Utilization and accounting: GPU-hours busy, idle and paused; tasks
    completed, failed and stopped; queue wait p50/p95; how busy the busy GPUs were.

    Every host of the fleet (--host NAME: one).  TASKH is task-hours, the wall
    time of tasks whatever GPUs they hold: CPU-only work counts there, and
    never in GPU-hours.

    \b
    fleetctl report --by host
    fleetctl report --since 7d --by user
    fleetctl report --since 2026-11-01 --until 2026-12-01 --by queue --csv
    """
    if as_json and as_csv:
        raise click.UsageError("--json and --csv: choose one")
    window(since, until, time.time())  # a bad value fails here, with its name, before any request
    params = {"since": since, "by": by, **({"until": until} if until else {}), **({"host": host} if host else {})}
    answer = ctx.client().get("/report", params=params)
    if as_json:
        output.emit_json(answer)
        return
    rows = [*flat_rows(answer["rows"]), answer["totals"]]
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        keys = [*answer["totals"], "parent"]
        writer.writerow(keys)
        writer.writerows([["" if r.get(k) is None else r[k] for k in keys] for r in rows])
        return
    _summary(answer)
    title = f"By {by} (BUSY/IDLE/PAUSED in GPU-hours; TASKH: task-hours; UTIL: mean utilization of busy GPUs)"
    cols = [Col(name, fixed=key != "key", right=key != "key") for key, name in COLUMNS]
    output.table(
        title, cols, ([_cell(k, _key(r) if k == "key" else r[k]) for k, _ in COLUMNS] for r in rows), wide=wide
    )
    for note in answer.get("notes", []):
        output.info(f"note: {note}")


COMMANDS = [report]
