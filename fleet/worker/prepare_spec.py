"""What the worker hands the preparing step: the task and the config, as one file.

``python -m fleet.worker.prepare`` used to load the task from the store and
re-read the config file: opening the store imports sqlite-utils and reading
the config imports pyhocon (with pyparsing), a few hundred milliseconds on a
busy machine before the first ``git`` call.  The worker has both in memory
when it launches the task, so :func:`fleet.worker.launch.plan_launch` writes
them here and the preparing step reads them with :mod:`json` alone.

Decisions:

* A file per attempt, ``$FLEET_HOME/work/<task id>-<attempt>.prepare.json``,
  owner-only (0600, in the 0700 work folder): the config holds secrets
  (``agent.git_pass``, the API token), so they travel in neither an argument
  vector nor the task's environment.  The preparing step removes it as soon as
  it has read it.
* The config travels as plain JSON and is validated again on the way in by
  the same code that validates the file (:func:`fleet.core.config.config_from_plain`).
* The task travels as the fields preparation reads (its user, script,
  requirements, environment, docker settings); the rest of :class:`~fleet.core.models.Task`
  is filled with neutral values, since nothing on this path reads it.
* Only the standard library and the models/config modules: this is on the
  launch path of every prepared task.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleet.core.config import Config, config_from_plain
from fleet.core.models import DockerMode, Script, Task, TaskRequirements, TaskStatus

VERSION = 1


def spec_path(home: Path, task_id: str, attempt: int) -> Path:
    return home / "work" / f"{task_id}-{attempt}.prepare.json"


def plain(value: Any) -> Any:
    """A config value as JSON: dataclasses and mappings as objects, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "path"}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value


def write_spec(path: Path, task: Task, config: Config) -> None:
    body = {
        "v": VERSION,
        "task": {
            "id": task.id,
            "attempt": task.attempt,
            "user": task.user,  # whom it runs as, with fleet.run_as_submitter (fleet.worker.runas)
            "script": task.script.to_json(),
            "env": dict(task.env),
            "requirements": task.requirements.to_json(),
            "docker": task.docker.to_json() if task.docker is not None else None,
        },
        "config": plain(config),
        "config_path": str(config.path) if config.path is not None else None,
    }
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(body, separators=(",", ":")).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_spec(path: Path) -> tuple[Task, Config]:
    """The task and config at ``path``, and the file removed; ``OSError`` or
    ``ValueError`` when there is none or it is not one (the caller falls back
    to the store and the config file)."""
    with open(path, "rb") as fh:
        data = fh.read()
    os.unlink(path)
    body = json.loads(data)
    if not isinstance(body, dict) or body.get("v") != VERSION:
        raise ValueError(f"{path}: not a prepare spec")
    raw = body["task"]
    task = Task(
        id=str(raw["id"]),
        name="",
        status=TaskStatus.IN_PROGRESS,
        status_reason="",
        queue=None,
        priority=0,
        script=Script.from_json(raw["script"]),
        env={str(k): str(v) for k, v in raw["env"].items()},
        user=str(raw.get("user") or ""),
        created_at=0.0,
        attempt=int(raw["attempt"]),
        requirements=TaskRequirements.from_json(raw["requirements"] or {}),
        docker=DockerMode.from_json(raw["docker"]),
    )
    source = body.get("config_path")
    return task, config_from_plain(body["config"], Path(source) if source else None)
