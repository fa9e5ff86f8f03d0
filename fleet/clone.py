"""Cloning a task (ClearML's "clone"): a new task with the same code,
requirements and settings, optionally with edited arguments and environment.

The API shows secret-looking environment values masked (``********``); an
edited environment that still carries the mask for a variable keeps that
variable's real value, so a person can edit a task's environment on the page
without ever seeing its secrets.
"""

from __future__ import annotations

import dataclasses

from fleet.models import Task, TaskSpec
from fleet.validate import MASK


def clone_spec(
    source: Task,
    *,
    name: str | None = None,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> TaskSpec:
    new_env = dict(source.env)
    if env is not None:
        new_env = {
            key: (source.env[key] if value == MASK and key in source.env else value) for key, value in env.items()
        }
    script = source.script if command is None else dataclasses.replace(source.script, command=list(command))
    return TaskSpec(
        script=script,
        name=name or f"{source.name} (clone)"[:256],
        env=new_env,
        priority=source.priority,
        timeout=source.timeout,
        retries=source.retries,
        gpus=source.gpus_needed,
        user=source.user,
        requirements=dict(source.requirements),
        docker=dict(source.docker),
        parent=source.id,
    )
