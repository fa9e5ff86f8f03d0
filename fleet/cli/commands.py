"""Which module holds each ``fleetctl`` command, loaded only when it is run.

``fleetctl submit`` should cost a few tens of milliseconds, so a command's
module is imported only when that command runs (click's documented
"lazily loading subcommands" pattern): a client command imports click, the
standard library's http.client and fleet's light modules, never the manager,
the worker, the store, httpx or pydantic.
``fleetctl --help`` lists every command from :data:`COMMANDS` without
importing any of them, so each entry also carries the command's one-line help
(tests/cli/test_cli_fast.py checks it against the command's own docstring).
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import click

from fleet.cli.wording import reword


class Entry(NamedTuple):
    module: str
    attribute: str
    short_help: str
    hidden: bool = False


_TASKS = "fleet.cli.cmd_tasks"
_WORKERS = "fleet.cli.cmd_workers"

# In the order ``fleetctl --help`` lists them (click sorts them by name).
COMMANDS: dict[str, Entry] = {
    "up": Entry("fleet.cli.cmd_up", "up", "Start this host's manager if needed and add a worker."),
    "manager": Entry(
        "fleet.cli.cmd_up", "manager", "Run a manager with no initial workers (what `up` starts detached).", True
    ),
    "daemon": Entry(
        "fleet.cli.cmd_daemon", "daemon", "ClearML Agent's `daemon`: the same as `up`, spelled as ClearML writes it."
    ),
    "stop": Entry(_WORKERS, "stop", "Stop workers; with none named, stop every worker and the manager."),
    "status": Entry(
        _WORKERS, "status", "Hosts, workers, queues and the manager's address (every host; --host NAME: one)."
    ),
    "page": Entry(_WORKERS, "page", "Print a one-time login link to the web page (good for 2 minutes, once)."),
    "force": Entry(
        _WORKERS, "force", "Force a worker on or off, over its schedule (a runtime property); `clear` removes it."
    ),
    "submit": Entry("fleet.cli.cmd_submit", "submit", "Create a task from the current folder and enqueue it."),
    "wait": Entry(_TASKS, "wait", "Block until the tasks end; exit 0 if all completed, 1 otherwise."),
    "tasks": Entry(
        _TASKS, "list_tasks", "List tasks, newest first (every host; --host NAME: the tasks that ran there)."
    ),
    "show": Entry(
        _TASKS, "show", "A task's details, attempts and figures (runtime, peak RSS, mean CPU, peak GPU memory)."
    ),
    "logs": Entry(_TASKS, "logs", "Print a task's log (stdout and stderr, line by line)."),
    "abort": Entry(_TASKS, "abort", "Stop a task: a queued one at once, a running one via its worker."),
    "enqueue": Entry(_TASKS, "enqueue", "Put a task (created, or ended) in a queue."),
    "dequeue": Entry(_TASKS, "dequeue", "Take a queued task out of its queue (it goes back to created)."),
    "clone": Entry(_TASKS, "clone", "Copy a task into a new one (created, or queued with --queue); print its id."),
    "queues": Entry("fleet.cli.cmd_queues", "queues", "List queues with their pending and running tasks."),
    "queue": Entry("fleet.cli.cmd_queues", "queue", "Create, delete and tag queues."),
    "execute": Entry(
        "fleet.cli.cmd_exec", "execute", "Run a task here, in the foreground, without a queue; exit with its exit code."
    ),
    "build": Entry(
        "fleet.cli.cmd_exec",
        "build",
        "Build a task's code and Python environment into a folder (with a `run` script), or into a docker image.",
    ),
    "report": Entry(
        "fleet.cli.cmd_report",
        "report",
        "Utilization and accounting: GPU-hours busy, idle and paused; tasks completed, failed and stopped; "
        "queue wait p50/p95; how busy the busy GPUs were.",
    ),
    "gpu": Entry("fleet.cli.cmd_gpus", "gpu", "List GPUs; drain a GPU (no new task gets it) or return it to service."),
    "init": Entry("fleet.cli.init_cmd", "init", "Write a configuration file with agent { } and fleet { } sections."),
}


def load(name: str) -> click.Command:
    """Import the command ``name`` and give it fleet's wording for bad values."""
    entry = COMMANDS[name]
    command = getattr(importlib.import_module(entry.module), entry.attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{entry.module}.{entry.attribute} is not a click command")
    reword(command)
    return command


class LazyGroup(click.Group):
    """A group whose commands are imported when they run (see the module docstring).

    While the group writes its own help (``fleetctl --help``) a command not yet
    imported is listed through a stand-in carrying its one-line help."""

    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            entry = COMMANDS[cmd_name]
            if self._listing:
                # click shortens `help` to the width the way it does a command's own
                return click.Command(cmd_name, help=entry.short_help, hidden=entry.hidden)
            self.add_command(load(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            self._listing = False
