"""Task commands: submit, wait, tasks, show, logs, abort, enqueue, dequeue, clone."""

from __future__ import annotations

import getpass
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fleet.cli import output, when
from fleet.cli.context import Context
from fleet.cli.output import WIDE, Col, short_id
from fleet.cli.sweep import combinations, grid_words, parse_array, parse_grid, substitute
from fleet.core.errors import EXIT_FAILURE, Conflict, FleetError, UsageError
from fleet.core.tasklog import strip_stamp
from fleet.core.validate import task_id as check_task_id

if TYPE_CHECKING:
    from fleet.cli.capture import GitInfo
    from fleet.cli.client import Client

pass_ctx = click.make_pass_decorator(Context)
WAIT_POLL_S = 0.1
MAX_TEXT = 1_000_000  # a requirements file or setup script (the API's limit)
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


def _env_pair(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """``K=V``, or ``K`` alone for this shell's value of ``K``: a secret given
    that way never appears in the command line (``ps``, shell history)."""
    env: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE or KEY", ctx, param)
        if not sep:
            if key not in os.environ:
                raise click.BadParameter(
                    f"{key!r} is not set in this environment (KEY alone passes its value)", ctx, param
                )
            value = os.environ[key]
        env[key] = value
    return env


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--queue", required=True, help="Queue to put the task in.")
@click.option("--name", default="", help="A name for people (default: the command).")
@click.option(
    "--env",
    "env",
    multiple=True,
    callback=_env_pair,
    metavar="K=V|K ...",
    help="Environment variables; K alone passes K's value from here.",
)
@click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first within the queue.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop the task after SECONDS; it ends failed (timeout).",
)
@click.option("--retries", type=click.IntRange(0, 1000), default=0, help="Queue a failed task again up to N times.")
@click.option(
    "--gpus",
    "gpus",
    type=click.IntRange(0, 1024),
    help="GPUs the task needs (a static worker takes only tasks that fit).",
)
@click.option(
    "--requirements",
    "requirements_file",
    metavar="FILE",
    help="A requirements file for the task (default: the repo's requirements.txt or pyproject.toml).",
)
@click.option("--packages", multiple=True, metavar="PKG [PKG ...]", help="Python packages the task needs.")
@click.option("--python", "python_version", metavar="X.Y", help="Python version for the task's environment.")
@click.option("--setup-script", "setup_script", metavar="FILE", help="A shell script the worker runs first.")
@click.option("--docker", "docker_image", metavar="IMAGE", help="The image a docker-mode worker runs the task in.")
@click.option(
    "--docker-args",
    "docker_args",
    multiple=True,
    metavar='"ARGS"',
    help="docker run arguments for the task's container (-v, -e, --ipc, --shm-size, --network).",
)
@click.option("--push", is_flag=True, help="Push the current branch to its remote first if the commit is not there.")
@click.option(
    "--no-code",
    "no_code",
    is_flag=True,
    help="Inside a git checkout too: run the command as a plain task in this folder (no repo, commit or diff).",
)
@click.option(
    "--array",
    "array_spec",
    metavar="START-END[:STEP][%MAX]",
    help="One task per index, in one request: env FLEET_ARRAY_INDEX, {index} in the command and --name.",
)
@click.option(
    "--grid",
    "grid",
    multiple=True,
    metavar="NAME=V1,V2 ...",
    help="One task per combination of the values: env NAME, {NAME} in the command and --name.",
)
@click.option(
    "--max-running",
    "max_running",
    type=click.IntRange(1, 100_000),
    help="At most N tasks of the array run at once, across every worker (--array's %N).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the task object (a sweep: its array and task ids).")
@click.argument("command", nargs=-1, required=True)
@pass_ctx
def submit(
    ctx: Context,
    queue: str,
    name: str,
    env: dict[str, str],
    priority: int,
    timeout: float | None,
    retries: int,
    gpus: int | None,
    requirements_file: str | None,
    python_version: str | None,
    packages: tuple[str, ...],
    setup_script: str | None,
    docker_image: str | None,
    docker_args: tuple[str, ...],
    push: bool,
    no_code: bool,
    array_spec: str | None,
    grid: tuple[str, ...],
    max_running: int | None,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Create a task from the current folder and enqueue it.

    \b
    fleetctl submit --queue default -- python train.py --lr 0.1
    The command runs as given (never through a shell) in this folder.
    Inside a git checkout the task records the remote, branch, commit and
    the uncommitted changes (untracked files too), and the worker runs the
    code exactly as it stands here.  The commit must be on the remote:
    push it first, or pass --push.  --no-code skips all that and runs the
    command in this folder as it is when the task starts, like outside git.

    \b
    A sweep in one call (one array, one request; the code captured once):
    fleetctl submit --queue default --array 0-99%8 -- python run.py --seed {index}
    fleetctl submit --queue default --grid lr=0.1,0.01 bs=32,64 -- python train.py --lr {lr}
    Prints the array id (a-...) for `tasks --array`, `wait` and `abort`.
    """
    sweeping = array_spec is not None or bool(grid)
    if grid:
        more, command = grid_words(command)
        grid = (*grid, *more)
        if not command:
            raise UsageError("--grid: expected the command after the NAME=V1,V2 words", field="command")
    if max_running is not None and not sweeping:
        raise UsageError("--max-running: only with --array or --grid", field="max_running")
    plan = _sweep(array_spec, grid, max_running) if sweeping else None
    if plan is not None:  # a placeholder nobody defines is refused before the code is captured
        for arg in command:
            substitute(arg, plan[0][0], "argument")
        substitute(name, plan[0][0], "--name")
    if no_code and push:
        raise UsageError("--push: not with --no-code (no code is recorded, so nothing is pushed)", field="push")
    requirements: dict[str, Any] = {}
    if requirements_file is not None:
        requirements["file"] = _read_text("--requirements", requirements_file)
    if packages:
        requirements["packages"] = list(packages)
    if python_version is not None:
        requirements["python_version"] = python_version
    setup = _read_text("--setup-script", setup_script) if setup_script is not None else None
    docker = _docker_body(docker_image, docker_args)
    client = ctx.client()
    cwd = os.getcwd()
    body: dict[str, Any] = {
        "command": list(command),
        "working_dir": cwd,
        "queue": queue,
        "name": name,
        "env": env,
        "priority": priority,
        "timeout": timeout,
        "retries": retries,
        "gpus": gpus,
    }
    if requirements:
        body["requirements"] = requirements
    if setup is not None:
        body["setup_script"] = setup
    if docker is not None:
        body["docker"] = docker
    git = None if no_code or not _maybe_git(Path(cwd)) else _capture(Path(cwd), command, push)
    if git is not None:
        body["script"] = {
            "repo": git.repo,
            "branch": git.branch,
            "commit": git.commit,
            "diff": git.diff,
            "entry_point": git.entry_point,
            "repo_dir": git.repo_dir,
        }
    if plan is not None:
        _submit_sweep(client, body, plan, as_json)
        return
    task = client.post("/tasks", json=body)
    _answer(task, as_json, task["id"])


def _sweep(
    array_spec: str | None, grid: tuple[str, ...], max_running: int | None
) -> tuple[list[dict[str, str]], int | None]:
    """Each task's placeholder values and the array's cap, checked before anything else is done."""
    array = parse_array(array_spec) if array_spec is not None else None
    cap = array.max_running if array is not None and array.max_running is not None else max_running
    if (
        array is not None
        and array.max_running is not None
        and max_running is not None
        and array.max_running != max_running
    ):
        raise UsageError(f"--max-running {max_running}: --array already says %{array.max_running}", field="max_running")
    return combinations(array, parse_grid(list(grid))), cap


# What POST /tasks assumes when a key is left out: a sweep's body leaves these out of each task.
_DEFAULTS: dict[str, Any] = {"name": "", "priority": 0, "timeout": None, "retries": 0, "gpus": None}


def _submit_sweep(
    client: Client, body: dict[str, Any], plan: tuple[list[dict[str, str]], int | None], as_json: bool
) -> None:
    """One ``POST /tasks/batch`` for the whole sweep; the code (``script``) is sent once."""
    combos, cap = plan
    script = body.pop("script", None)
    names = [k for k in combos[0] if k != "index"]
    tasks = []
    common = {k: v for k, v in body.items() if v != _DEFAULTS.get(k, ...)}  # the API's defaults left out
    for position, values in enumerate(combos):
        task = dict(common)
        task["command"] = [substitute(arg, values, "argument") for arg in body["command"]]
        if body["name"]:
            task["name"] = substitute(body["name"], values, "--name")
        task["env"] = {**body["env"], **{n: values[n] for n in names}, "FLEET_ARRAY_INDEX": values["index"]}
        task["array_index"] = position
        tasks.append(task)
    batch: dict[str, Any] = {"tasks": tasks, "array": {"max_running": cap}}
    if script is not None:
        batch["script"] = script
    answer = client.post("/tasks/batch", json=batch)
    if as_json:
        output.emit_json(answer)
    else:
        output.info(str(answer["array"]))


def _maybe_git(cwd: Path) -> bool:
    """Whether ``cwd`` may be inside a git work tree: a ``.git`` (folder or file)
    here or above, or git's own variables set.  When not, git would say the same
    and ``submit`` spares starting it and loading the capture code."""
    if any(name in os.environ for name in ("GIT_DIR", "GIT_WORK_TREE")):
        return True
    return any((folder / ".git").exists() for folder in (cwd, *cwd.parents))


def _capture(cwd: Path, command: tuple[str, ...], push: bool) -> GitInfo | None:
    from fleet.cli.capture import capture  # git and the worker's code module: only inside a checkout

    return capture(cwd, command, push=push)


def _docker_body(image: str | None, args: tuple[str, ...]) -> dict[str, Any] | None:
    """``--docker IMAGE [--docker-args ...]``; the arguments are checked here, before the task exists."""
    if image is None:
        if args:
            raise UsageError("--docker-args: only with --docker IMAGE", field="docker_args")
        return None
    if not image.strip():
        raise UsageError("--docker: expected an image name", field="docker")
    from fleet.worker.docker.args import parse_docker_args  # docker's own types: only for --docker

    split = [part for text in args for part in shlex.split(text)]
    parse_docker_args(split)
    return {"image": image.strip(), "args": split}


def _read_text(option: str, path: str) -> str:
    """A text file named on the command line; a bad one is a usage error naming it."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot read it ({exc.strerror or exc})", field=option) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{option} {path}: expected UTF-8 text", field=option) from None
    if "\0" in text:
        raise UsageError(f"{option} {path}: expected text, found NUL bytes", field=option)
    if len(text) > MAX_TEXT:
        raise UsageError(f"{option} {path}: {len(text)} characters, over the limit of {MAX_TEXT}", field=option)
    return text


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
    array_id: str | None,
    limit: int,
    offset: int,
    wide: bool,
    as_json: bool,
) -> None:
    """List tasks, newest first."""
    if array_id is not None and not array_id.startswith(ARRAY_PREFIX):
        raise UsageError(f"--array {array_id}: expected an array id (a- and 16 hex characters)", field="array")
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    for key, value in (("queue", queue), ("status", status), ("worker", worker), ("array", array_id)):
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


def _answer(task: dict[str, Any], as_json: bool, text: str) -> None:
    """The task object for a script, else one line for people."""
    if as_json:
        output.emit_json(task)
    else:
        output.info(text)


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
        _answer(a, as_json, text)
        return
    try:
        t = ctx.client().post(f"/tasks/{task}/abort", json={"reason": f"aborted by {getpass.getuser()}"})
    except Conflict as exc:
        raise FleetError(exc.message, field=exc.field) from None
    _answer(t, as_json, f"{t['id']} {'stopped' if t['status'] == 'stopped' else 'abort requested'}")


@click.command()
@click.argument("task", type=TASK)
@click.option("--queue", required=True)
@click.option("--head", is_flag=True, help="Put it first in the queue.")
@click.option("--json", "as_json", is_flag=True, help="Print the task object.")
@pass_ctx
def enqueue(ctx: Context, task: str, queue: str, head: bool, as_json: bool) -> None:
    """Put a task (created, or ended) in a queue."""
    t = ctx.client().post(f"/tasks/{task}/enqueue", json={"queue": queue, "head": head})
    _answer(t, as_json, f"{t['id']} queued in {t['queue']}")


@click.command()
@click.argument("task", type=TASK)
@click.option("--json", "as_json", is_flag=True, help="Print the task object.")
@pass_ctx
def dequeue(ctx: Context, task: str, as_json: bool) -> None:
    """Take a queued task out of its queue (it goes back to created)."""
    t = ctx.client().post(f"/tasks/{task}/dequeue")
    _answer(t, as_json, f"{t['id']} {t['status']}")


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
    _answer(t, as_json, t["id"])


COMMANDS = [submit, wait, list_tasks, show, logs, abort, enqueue, dequeue, clone]
