"""`fleetctl submit`: a task, or a sweep of them (``--array``, ``--grid``), from the current folder."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fleet.cli import output
from fleet.cli.context import Context
from fleet.cli.sweep import combinations, grid_words, parse_array, parse_grid, substitute
from fleet.core.errors import UsageError

if TYPE_CHECKING:
    from fleet.cli.capture import GitInfo
    from fleet.cli.client import Client

pass_ctx = click.make_pass_decorator(Context)
MAX_TEXT = 1_000_000  # a requirements file or setup script (the API's limit)


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
    output.answer(task, as_json, task["id"])


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


COMMANDS = [submit]
