"""Cloning a task (ClearML's "clone"): a new task with the same code,
requirements and settings, optionally with edited arguments and environment.

The API shows secret environment values masked (``********``, or a URL with
its password masked); an edited environment that still carries a value as
the API showed it keeps that variable's real value
(:func:`fleet.core.secrets.unmask_env`), so a person can edit a task's environment
on the page without ever seeing its secrets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from fleet.core.models import Task, TaskSpec
from fleet.core.secrets import unmask_env


def clone_spec(
    source: Task,
    *,
    name: str | None = None,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
    hidden: Iterable[str] = (),
) -> TaskSpec:
    new_env = dict(source.env) if env is None else unmask_env(env, source.env, hidden)
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
        requirements=source.requirements,
        docker=source.docker,
        parent=source.id,
    )
