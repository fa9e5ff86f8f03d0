"""Task commands: wait, tasks, show, logs, abort, enqueue, dequeue, clone (submit: :mod:`fleet.cli.cmd_submit`)."""

from __future__ import annotations

import getpass
import re
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from fleet.cli import output, when
from fleet.cli.context import Context
from fleet.cli.output import WIDE, Col, short_id
from fleet.core.errors import EXIT_FAILURE, Conflict, FleetError, UsageError
from fleet.core.tasklog import strip_stamp
from fleet.core.validate import task_id as check_task_id

if TYPE_CHECKING:
    from fleet.cli.client import Client

pass_ctx = click.make_pass_decorator(Context)
WAIT_POLL_S = 0.1
ENDED = {"completed", "failed", "stopped"}


class TaskIdType(click.ParamType):  # type: ignore[type-arg]
    name = "TASK"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return check_task_id(str(value).lower())
        except UsageError as exc:
            self.fail(exc.message, param, ctx)


TASK = TaskIdType()


class TaskOrArrayType(TaskIdType):
    """A task id (or prefix), or an array id (``a-`` and 16 hex characters)."""

    name = "TASK|ARRAY"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).lower()
        if text.startswith(ARRAY_PREFIX):
            if not ARRAY_RE.fullmatch(text):
                self.fail(f"invalid array id {value!r}: expected a- and 16 hex characters", param, ctx)
            return text
        return super().convert(value, param, ctx)


TASK_OR_ARRAY = TaskOrArrayType()
ARRAY_PREFIX = "a-"
ARRAY_RE = re.compile(r"a-[0-9a-f]{16}")


@click.command()
@click.argument("tasks", nargs=-1, required=True, type=TASK_OR_ARRAY)
@click.option("--timeout", type=click.FloatRange(min=0), help="Give up after SECONDS (exit 1).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def wait(ctx: Context, tasks: tuple[str, ...], timeout: float | None, as_json: bool) -> None:
    """Block until the tasks end; exit 0 if all completed, 1 otherwise.

    An array id (a-...) waits for every task of the array: on a terminal one
    line of progress (done/failed/running/queued), else a line per change."""
    client = ctx.client()
    deadline = None if timeout is None else time.monotonic() + timeout
    arrays = [t for t in tasks if t.startswith(ARRAY_PREFIX)]
    if arrays:
        if len(tasks) > 1:
            raise UsageError(f"wait {' '.join(tasks)}: expected one array id alone, or task ids", field="tasks")
        _wait_array(client, arrays[0], deadline, timeout, as_json)
        return
    pending = list(dict.fromkeys(tasks))
    final: dict[str, dict[str, Any]] = {}
    while pending:
        for tid in list(pending):
            task = client.get(f"/tasks/{tid}")
            if task["status"] in ENDED:
                final[tid] = task
                pending.remove(tid)
        if not pending:
            break
        if deadline is not None and time.monotonic() > deadline:
            raise FleetError(f"timed out after {timeout:g}s waiting for {', '.join(pending)}")
        time.sleep(WAIT_POLL_S)
    if as_json:
        output.emit_json([final[t] for t in dict.fromkeys(tasks)])
    else:
        for tid in dict.fromkeys(tasks):
            task = final[tid]
            reason = f" ({task['status_reason']})" if task["status_reason"] else ""
            output.info(f"{task['id']} {task['status']}{reason}")
    if any(final[t]["status"] != "completed" for t in final):
        raise SystemExit(EXIT_FAILURE)


def _wait_array(client: Client, array_id: str, deadline: float | None, timeout: float | None, as_json: bool) -> None:
    """Poll the array's counts until every task ended; exit 1 when any did not complete."""
    tty = sys.stderr.isatty() and not as_json
    last = ""
    while True:
        array = client.get(f"/arrays/{array_id}")
        line = _progress(array)
        if line != last:
            if tty:
                sys.stderr.write("\r\x1b[2K" + line)
                sys.stderr.flush()
            elif not as_json:
                output.info(line)
            last = line
        if array["ended"]:
            break
        if deadline is not None and time.monotonic() > deadline:
            if tty:
                sys.stderr.write("\n")
            raise FleetError(f"timed out after {timeout:g}s waiting for array {array_id} ({line})")
        time.sleep(max(WAIT_POLL_S, 0.5 if array["size"] > 100 else WAIT_POLL_S))
    if tty:
        sys.stderr.write("\n")
        if not sys.stdout.isatty():  # the final counts for a script reading stdout; a terminal has them
            output.info(line)
    if as_json:
        output.emit_json(array)
    counts = array["counts"]
    if counts["failed"] or counts["stopped"]:
        raise SystemExit(EXIT_FAILURE)


def _progress(array: dict[str, Any]) -> str:
    """``a-... [#####.....] 40/100 done, 2 failed, 8 running, 50 queued``."""
    c, size = array["counts"], max(array["size"], 1)
    ended = c["completed"] + c["failed"] + c["stopped"]
    width = 20
    bar = "#" * (width * ended // size) + "." * (width - width * ended // size)
    failed = c["failed"] + c["stopped"]
    return (
        f"{array['id']} [{bar}] {c['completed']}/{array['size']} done, {failed} failed,"
        f" {c['in_progress']} running, {c['queued'] + c['created']} queued"
    )


@click.command("tasks")
@click.option("--queue", help="Only this queue.")
@click.option("--status", help="Only these statuses (comma-separated).")
@click.option("--worker", help="Only tasks of this worker.")
@click.option("--host", help="Only tasks that run or ran on this host (default: every host).")
@click.option("--array", "array_id", type=TASK_OR_ARRAY, help="Only this array's tasks (a-...), in index order.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0)
@WIDE
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def list_tasks(
    ctx: Context,
    queue: str | None,
    status: str | None,
    worker: str | None,
    host: str | None,
    array_id: str | None,
    limit: int,
    offset: int,
    wide: bool,
    as_json: bool,
) -> None:
    """List tasks, newest first (every host; --host NAME: the tasks that ran there)."""
    if array_id is not None and not array_id.startswith(ARRAY_PREFIX):
        raise UsageError(f"--array {array_id}: expected an array id (a- and 16 hex characters)", field="array")
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    for key, value in (
        ("queue", queue),
        ("status", status),
        ("worker", worker),
        ("host", host),
        ("array", array_id),
    ):
        if value is not None:
            params[key] = value
    answer = ctx.client().get("/tasks", params=params)
    if as_json:
        output.emit_json(answer)
        return
    more = f"; the rest from --offset {answer['next_offset']}" if answer.get("truncated") else ""
    output.table(
        f"Tasks ({len(answer['tasks'])} of {answer['total']}{more})",
        [
            Col("ID", fixed=True),
            Col("NAME"),
            Col("QUEUE"),
            Col("STATUS", fixed=True),
            Col("WORKER"),
            Col("GPUS"),
            Col(when.header("CREATED"), fixed=True),
            Col("REASON"),
        ],
        (
            [
                short_id(t["id"], wide),
                t["name"],
                t["queue"],
                t["status"],
                t["worker"],
                ",".join(map(str, t["gpus"])),
                when.cell(t["created_at"]),
                t["status_reason"] or "",
            ]
            for t in answer["tasks"]
        ),
        wide=wide,
    )


@click.command()
@click.argument("task", type=TASK)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def show(ctx: Context, task: str, as_json: bool) -> None:
    """A task's details, attempts and figures (runtime, peak RSS, mean CPU, peak GPU memory)."""
    client = ctx.client()
    t = client.get(f"/tasks/{task}")
    t["usage"] = client.get(f"/metrics/tasks/{t['id']}")
    if as_json:
        output.emit_json(t)
        return
    script = t["script"]
    rows = [
        ("id", t["id"]),
        ("name", t["name"]),
        ("status", t["status"] + (f" ({t['status_reason']})" if t["status_reason"] else "")),
        ("queue", t["queue"]),
        ("priority", t["priority"]),
        ("command", " ".join(script["command"])),
        ("working dir", script["working_dir"]),
        ("worker", t["worker"]),
        ("gpus", ",".join(map(str, t["gpus"]))),
        ("gpu uuids", ",".join(t.get("gpu_uuids") or []) or "-"),
        ("exit code", t["exit_code"]),
        ("attempt", f"{t['attempt']} (retries allowed: {t['retries']})"),
        ("timeout", t["timeout"]),
        ("user", t["user"]),
        ("created", when.full(t["created_at"])),
        ("queued", when.full(t["queued_at"])),
        ("started", when.full(t["started_at"])),
        ("finished", when.full(t["finished_at"])),
    ]
    rows += [(f"env {k}", v) for k, v in t["env"].items()]
    usage = t["usage"]

    def mb(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} MB"

    rows += [
        ("runtime", "-" if usage["runtime_s"] is None else f"{usage['runtime_s']:.1f}s"),
        ("peak RSS", mb(usage["peak_rss_mb"])),
        ("mean CPU", "-" if usage["mean_cpu_percent"] is None else f"{usage['mean_cpu_percent']:.0f}%"),
        ("peak GPU memory", mb(usage["peak_gpu_mem_mb"]) if usage["nvml"] else "- (no NVML)"),
    ]
    output.table(None, [Col("FIELD", fixed=True), Col("VALUE", fixed=True)], rows)  # values in full
    if t.get("attempts"):
        output.table(
            "Attempts",
            [
                Col("#", fixed=True, right=True),
                Col("WORKER"),
                Col("GPUS"),
                Col("STATUS", fixed=True),
                Col("EXIT", fixed=True, right=True),
                Col(when.header("STARTED"), fixed=True),
                Col(when.header("FINISHED"), fixed=True),
                Col("REASON"),
            ],
            (
                [
                    a["attempt"],
                    a["worker"],
                    ",".join(map(str, a["gpus"])) + (f" ({','.join(a['gpu_uuids'])})" if a.get("gpu_uuids") else ""),
                    a["status"],
                    a["exit_code"],
                    when.cell(a["started_at"]),
                    when.cell(a["finished_at"]),
                    a["reason"] or "",
                ]
                for a in t["attempts"]
            ),
        )


@click.command()
@click.argument("task", type=TASK)
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the task ends.")
@click.option("--no-timestamps", is_flag=True, help="Print the lines without their arrival time.")
@pass_ctx
def logs(ctx: Context, task: str, follow: bool, no_timestamps: bool) -> None:
    """Print a task's log (stdout and stderr, line by line).

    A task that has not started has no log yet: without --follow that is said
    on stderr and the exit is 0 (nothing is wrong; run it again later or
    --follow); a task that ended without ever running says so the same way."""
    client = ctx.client()
    if follow:
        chunks = client.stream(f"/tasks/{task}/log", {"follow": True})
    else:
        content = client.get(f"/tasks/{task}/log").content
        if not content:
            _no_log_yet(client.get(f"/tasks/{task}"))
        chunks = iter([content])
    partial = b""
    for chunk in chunks:
        data = partial + chunk
        *lines, partial = data.split(b"\n")
        _print_lines(lines, no_timestamps)
    if partial:
        _print_lines([partial], no_timestamps)


def _no_log_yet(t: dict[str, Any]) -> None:
    """Say why an empty log is empty when the task never started."""
    if t["started_at"] is not None:
        return
    reason = f": {t['status_reason']}" if t["status_reason"] else ""
    where = f" in queue {t['queue']}" if t["status"] == "queued" and t["queue"] else ""
    if t["status"] in ENDED:
        note = f"{t['id']} never ran ({t['status']}{reason}): it has no log"
    else:
        note = f"{t['id']} has not started yet ({t['status']}{where}{reason}): no log yet; --follow waits for it"
    click.echo(f"fleetctl: {output.printable(note)}", err=True)


def _print_lines(lines: list[bytes], no_timestamps: bool) -> None:
    out = sys.stdout
    for raw in lines:
        line = raw.decode("utf-8", "replace")
        out.write((strip_stamp(line) if no_timestamps else line) + "\n")
    out.flush()


@click.command()
@click.argument("task", type=TASK_OR_ARRAY)
@click.option("--json", "as_json", is_flag=True, help="Print the task object.")
@pass_ctx
def abort(ctx: Context, task: str, as_json: bool) -> None:
    """Stop a task: a queued one at once, a running one via its worker.

    A task that is not queued or running (it ended, or was never queued) is
    a failure (exit 1) naming its state, not bad usage: the command was right.
    An array id (a-...) stops every queued task of the array and asks its
    running ones to stop, at once."""
    if task.startswith(ARRAY_PREFIX):
        a = ctx.client().post(f"/arrays/{task}/abort", json={"reason": f"aborted by {getpass.getuser()}"})
        text = f"{a['id']}: {a['stopped']} stopped, {a['abort_requested']} abort requested"
        output.answer(a, as_json, text)
        return
    try:
        t = ctx.client().post(f"/tasks/{task}/abort", json={"reason": f"aborted by {getpass.getuser()}"})
    except Conflict as exc:
        raise FleetError(exc.message, field=exc.field) from None
    output.answer(t, as_json, f"{t['id']} {'stopped' if t['status'] == 'stopped' else 'abort requested'}")


@click.command()
@click.argument("task", type=TASK)
@click.option("--queue", required=True)
@click.option("--head", is_flag=True, help="Put it first in the queue.")
@click.option("--json", "as_json", is_flag=True, help="Print the task object.")
@pass_ctx
def enqueue(ctx: Context, task: str, queue: str, head: bool, as_json: bool) -> None:
    """Put a task (created, or ended) in a queue."""
    t = ctx.client().post(f"/tasks/{task}/enqueue", json={"queue": queue, "head": head})
    output.answer(t, as_json, f"{t['id']} queued in {t['queue']}")


@click.command()
@click.argument("task", type=TASK)
@click.option("--json", "as_json", is_flag=True, help="Print the task object.")
@pass_ctx
def dequeue(ctx: Context, task: str, as_json: bool) -> None:
    """Take a queued task out of its queue (it goes back to created)."""
    t = ctx.client().post(f"/tasks/{task}/dequeue")
    output.answer(t, as_json, f"{t['id']} {t['status']}")


@click.command()
@click.argument("task", type=TASK)
@click.option("--queue", help="Enqueue the clone here.")
@click.option("--name", help="Name of the clone.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def clone(ctx: Context, task: str, queue: str | None, name: str | None, as_json: bool) -> None:
    """Copy a task into a new one (created, or queued with --queue); print its id."""
    body: dict[str, Any] = {"queue": queue, "name": name}
    t = ctx.client().post(f"/tasks/{task}/clone", json=body)
    output.answer(t, as_json, t["id"])


COMMANDS = [wait, list_tasks, show, logs, abort, enqueue, dequeue, clone]
