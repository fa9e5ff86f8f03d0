"""The pure half of docker mode: which image, which name, which arguments.

Nothing here talks to an engine, so every rule is unit-tested.

Decisions:

* Image: the task's ``docker.image`` (``submit --docker``) wins, then the
  worker's (``up --docker IMAGE``), then ``agent.default_docker.image``.  The
  task's ``docker.args`` go with the task's image; ``default_docker.arguments``
  only with the default image; ``agent.extra_docker_arguments`` are always
  appended last.
* Docker arguments (the task's, the worker's, ``default_docker.arguments``,
  ``extra_docker_arguments``) are translated into SDK keyword arguments by
  :mod:`fleet.worker.docker.runflags`: every ``docker run`` option the SDK can
  express; the rest is refused, naming it, instead of being silently dropped.
* The container name follows ``agent.docker_container_name_format`` with
  ``{task_id}``, ``{worker_id}`` and ``{rand_string}`` (32 lower-case
  letters; the format can cut it, ``{rand_string:.8}``).  Characters Docker
  refuses become ``-``; the result is checked against Docker's rule.
* The command line *shown* (log, API) is a ``docker run`` equivalent with the
  secrets masked (:mod:`fleet.core.secrets`); the container itself gets the real
  values.
"""

from __future__ import annotations

import logging
import random
import re
import shlex
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet.core.models import DockerMode
from fleet.core.secrets import mask_command
from fleet.worker.docker import runflags
from fleet.worker.docker.runflags import DockerArgsError as DockerArgsError

log = logging.getLogger(__name__)

LABEL_TASK = "fleet.task"
LABEL_WORKER = "fleet.worker"
LABEL_HOST = "fleet.host"
LABEL_HOME = "fleet.core.home"
LABEL_PID = "fleet.runner_pid"

NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
_BAD_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_.-]")


@dataclass
class RunOptions:
    """What the ``docker run`` arguments mean, as SDK keyword arguments."""

    volumes: dict[str, dict[str, str]] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    ipc_mode: str | None = None
    shm_size: str | None = None
    network_mode: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    working_dir: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # every other create() keyword argument
    shown: list[str] = field(default_factory=list)  # ``options`` as docker run arguments, for the log


def choose_image(
    task_docker: DockerMode | None,
    worker_image: str,
    default_image: str,
    default_args: Sequence[str],
    worker_args: Sequence[str] = (),
) -> tuple[str, list[str]]:
    """(image, docker arguments) for a task; raise when no image is known anywhere.

    The worker's arguments (``daemon --docker IMAGE ARGS``) go with the
    worker's image, before the task's, as ClearML's daemon does."""
    image = task_docker.image.strip() if task_docker is not None else ""
    task_args = list(task_docker.args) if task_docker is not None else []
    if image:
        return image, task_args
    if worker_image.strip():
        return worker_image.strip(), [*worker_args, *task_args]
    if default_image.strip():
        return default_image.strip(), [*default_args, *task_args]
    raise DockerArgsError(
        "docker mode: no image: the task has none (submit --docker IMAGE), the worker has none "
        "(up --docker IMAGE) and agent.default_docker.image is not set",
        field="docker",
    )


def container_name(fmt: str, task_id: str, worker_id: str, rand: str | None = None) -> str:
    """The container's name from ``docker_container_name_format``; refuse a format Docker cannot take."""
    rand = rand if rand is not None else "".join(random.choices(string.ascii_lowercase, k=32))
    try:
        raw = fmt.format(task_id=task_id, worker_id=worker_id, rand_string=rand)
    except (KeyError, IndexError, ValueError) as exc:
        raise DockerArgsError(
            f"agent.docker_container_name_format {fmt!r}: {exc!s}; allowed fields are "
            "{task_id}, {worker_id} and {rand_string}",
            field="agent.docker_container_name_format",
        ) from None
    name = _BAD_NAME_CHARS.sub("-", raw)
    if not NAME_RE.fullmatch(name):
        raise DockerArgsError(
            f"agent.docker_container_name_format {fmt!r} gives {name!r}, which Docker refuses: "
            "expected [a-zA-Z0-9][a-zA-Z0-9_.-]+",
            field="agent.docker_container_name_format",
        )
    return name


_OWN_SHOWN = ("--ipc=", "--shm-size=", "--network=")


def parse_docker_args(args: Sequence[str], environ: Mapping[str, str] | None = None) -> RunOptions:
    """Translate ``docker run`` arguments; ``-e NAME`` takes NAME's value from ``environ``."""
    parsed = runflags.parse(args, environ)
    opts = dict(parsed.options)
    return RunOptions(
        volumes=parsed.volumes,
        environment=parsed.environment,
        ipc_mode=opts.pop("ipc_mode", None),
        shm_size=opts.pop("shm_size", None),
        network_mode=opts.pop("network_mode", None),
        labels=parsed.labels,
        name=opts.pop("name", None),
        working_dir=opts.pop("working_dir", None),
        options=opts,
        shown=[s for s in parsed.shown if not s.startswith(_OWN_SHOWN)],
    )


@dataclass
class ContainerSpec:
    """Everything the runner hands to ``containers.run`` (and shows, masked)."""

    image: str
    command: list[str]
    name: str
    labels: dict[str, str]
    environment: dict[str, str]
    volumes: dict[str, dict[str, str]]
    working_dir: str
    gpus: list[str] = field(default_factory=list)  # device ids for the DeviceRequest: UUIDs, else indices
    ipc_mode: str | None = None
    shm_size: str | None = None
    network_mode: str | None = None
    # Bind through the mounts API: the binds then stay out of the container's
    # config, which a commit would turn into VOLUME declarations of the image.
    as_mounts: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # further create() arguments (RunOptions.options)
    shown_args: list[str] = field(default_factory=list)  # those as docker run arguments

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``client.containers.create`` (device requests added by the runner)."""
        out: dict[str, Any] = {
            "image": self.image,
            "command": list(self.command),
            "name": self.name,
            "labels": dict(self.labels),
            "environment": dict(self.environment),
            "working_dir": self.working_dir,
            "init": True,
            "detach": True,
        }
        if self.as_mounts:
            out["mounts"] = [
                {"Type": "bind", "Source": host, "Target": bind["bind"], "ReadOnly": bind["mode"] == "ro"}
                for host, bind in self.volumes.items()
            ]
        else:
            out["volumes"] = {k: dict(v) for k, v in self.volumes.items()}
        for key in ("ipc_mode", "shm_size", "network_mode"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        for key, value in self.options.items():
            out[key] = [*out.get(key, []), *value] if key == "mounts" else value
        return out

    def shown(self, extra_keys: Iterable[str] = (), secret_values: Iterable[str] = (), hide: bool = True) -> str:
        """A ``docker run`` command line equivalent to this spec, for people; secrets masked."""
        argv = ["docker", "run", "--rm", "--init", "--name", self.name]
        for key, value in self.labels.items():
            argv += ["--label", f"{key}={value}"]
        if self.gpus:
            argv += ["--gpus", "device=" + ",".join(self.gpus)]
        options = (("--ipc", self.ipc_mode), ("--shm-size", self.shm_size), ("--network", self.network_mode))
        for opt, setting in options:
            if setting is not None:
                argv.append(f"{opt}={setting}")
        for host, bind in self.volumes.items():
            argv += ["-v", f"{host}:{bind['bind']}:{bind['mode']}"]
        for key, value in self.environment.items():
            argv += ["-e", f"{key}={value}"]
        argv += [*self.shown_args, "-w", self.working_dir, self.image, *self.command]
        if not hide:
            return shlex.join(argv)
        return mask_command(argv, extra_keys, secret_values)
