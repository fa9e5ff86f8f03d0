"""How a worker starts a task: the argument vector, folder and environment.

A plain command task runs its command directly, so nothing stands between
the claim and the task's first line.  This is the one place that decides
what runs; a task whose code or Python environment must be prepared first is
launched through a preparing step here, so that abort, timeout and log
capture cover the preparation too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fleet.models import Task, Worker
from fleet.worker.taskenv import task_environment


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    cwd: str
    env: dict[str, str]


def plan_launch(task: Task, worker: Worker, base_env: dict[str, str]) -> Launch:
    """Raise ``OSError`` when the task cannot be started here (its folder is gone)."""
    if not os.path.isdir(task.script.working_dir):
        raise FileNotFoundError(2, f"working directory {task.script.working_dir} does not exist")
    return Launch(list(task.script.command), task.script.working_dir, task_environment(task, worker, base_env))
