"""Request bodies.  Every field is checked here, so a bad request gets a 422
naming the field and never reaches the store.

Types are strict: ``"5"`` or ``true`` is not a priority, ``"yes"`` is not a
boolean; JSON numbers still fill float fields."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from fleet.api.bounds import (
    ENV_MAX_ENTRIES,
    ENV_NAME_MAX,
    ENV_VALUE_MAX,
    NAME_MAX,
    Attempt,
    ExitCode,
    ExpirySeconds,
    GpuCount,
    GpuIndex,
    Priority,
    Retries,
    ServicesMax,
    TimeoutSeconds,
)
from fleet.core.errors import UsageError
from fleet.core.models import MAX_DIFF_BYTES
from fleet.core.validate import env_name, queue_name, worker_id


def as_value_error(check: Callable[[str], str]) -> Callable[[str], str]:
    """Run one of :mod:`fleet.core.validate`'s checks as a pydantic validator, so a
    bad value gets its readable message ("invalid task id 'x': expected ...")."""

    def run(value: str) -> str:
        try:
            return check(value)
        except UsageError as exc:
            raise ValueError(exc.message) from None

    return run


QueueName = Annotated[str, AfterValidator(as_value_error(queue_name))]


def _env_vars(value: dict[str, str] | None) -> dict[str, str] | None:
    """Environment variables: valid names, no NUL in values (their number and
    sizes are bounded by :data:`Env`)."""
    for key, val in (value or {}).items():
        try:
            env_name(key)
        except UsageError as exc:
            raise ValueError(exc.message) from None
        if "\0" in val:
            raise ValueError(f"value of {key} contains a NUL character")
    return value


def _no_nul_text(value: str) -> str:
    if "\0" in value:
        raise ValueError("cannot contain NUL characters")
    return value


# A task's environment: at most ENV_MAX_ENTRIES variables, names of at most
# ENV_NAME_MAX characters, values of at most ENV_VALUE_MAX.
Env = Annotated[
    dict[Annotated[str, Field(max_length=ENV_NAME_MAX)], Annotated[str, Field(max_length=ENV_VALUE_MAX)]],
    Field(max_length=ENV_MAX_ENTRIES),
    AfterValidator(_env_vars),
]
# A short text shown to people (a task's name, its user): no NUL.
Text = Annotated[str, Field(max_length=NAME_MAX), AfterValidator(_no_nul_text)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


MAX_SCRIPT_TEXT = 1_000_000  # a setup script or a requirements file, in characters
COMMIT_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def _no_nul(value: str | None) -> str | None:
    if value is not None and "\0" in value:
        raise ValueError("cannot contain NUL characters")
    return value


def _relative(value: str | None) -> str | None:
    if value is not None:
        path = PurePosixPath(value)
        if "\0" in value or path.is_absolute() or ".." in path.parts:
            raise ValueError("expected a path relative to the repository root, without '..'")
    return value


class ScriptBody(Strict):
    """A git checkout: ``repo`` at ``commit`` plus ``diff``, run in ``repo_dir``."""

    repo: str = Field(min_length=1, max_length=4096)
    branch: str | None = Field(None, min_length=1, max_length=1024)
    commit: str
    diff: str = Field("", max_length=MAX_DIFF_BYTES)
    entry_point: str | None = Field(None, min_length=1, max_length=4096)
    repo_dir: str = Field(".", min_length=1, max_length=4096)

    @field_validator("repo")
    @classmethod
    def _url(cls, value: str) -> str:
        # it reaches git's argument vector: no option look-alikes, no control characters
        if value.startswith("-") or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("expected a git URL or path (no control characters, not starting with '-')")
        return value

    @field_validator("commit")
    @classmethod
    def _commit(cls, value: str) -> str:
        if not COMMIT_RE.fullmatch(value):
            raise ValueError("expected a full commit id (40 or 64 lower-case hex characters)")
        return value

    check_texts = field_validator("branch", "diff")(_no_nul)
    check_paths = field_validator("entry_point", "repo_dir")(_relative)


class RequirementsBody(Strict):
    """Packages (one requirement each) and/or the text of a requirements file."""

    packages: list[Annotated[str, Field(min_length=1, max_length=1000)]] = Field(
        default_factory=list, max_length=10_000
    )
    file: str | None = Field(None, max_length=MAX_SCRIPT_TEXT)
    python_version: str | None = Field(None, pattern=r"^3\.\d{1,2}(\.\d{1,3})?$", description="e.g. 3.11")

    @field_validator("packages")
    @classmethod
    def _one_line(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item.strip() or any(c in item for c in "\0\r\n"):
                raise ValueError(f"{item!r}: expected one requirement (no line breaks, not blank)")
        return value

    check_file = field_validator("file")(_no_nul)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.packages:
            out["packages"] = list(self.packages)
        if self.file is not None:
            out["file"] = self.file
        if self.python_version is not None:
            out["python_version"] = self.python_version
        return out


class DockerBody(Strict):
    """``submit --docker IMAGE [--docker-args ...]``: used when a docker-mode worker runs the task."""

    image: str = Field(min_length=1, max_length=500)
    args: list[Annotated[str, Field(max_length=10_000)]] = Field(default_factory=list, max_length=1000)

    def to_json(self) -> dict[str, object]:
        return {"image": self.image, "args": list(self.args)}


class TaskCreate(Strict):
    command: list[Annotated[str, Field(min_length=1, max_length=100_000)]] = Field(min_length=1, max_length=10_000)
    working_dir: str = Field(min_length=1, max_length=4096)
    queue: QueueName | None = None
    name: Text = ""
    env: Env = Field(default_factory=dict)
    priority: Priority = 0
    timeout: TimeoutSeconds | None = None
    retries: Retries = 0
    gpus: GpuCount | None = None
    user: Text = ""
    script: ScriptBody | None = None
    setup_script: str | None = Field(None, max_length=MAX_SCRIPT_TEXT)
    requirements: RequirementsBody | None = None
    docker: DockerBody | None = None

    check_setup = field_validator("setup_script")(_no_nul)

    @field_validator("working_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not os.path.isabs(value) or "\0" in value:
            raise ValueError("expected an absolute path")
        return value

    @field_validator("command")
    @classmethod
    def _no_nul_arguments(cls, value: list[str]) -> list[str]:
        if any("\0" in part for part in value):
            raise ValueError("command arguments cannot contain NUL characters")
        return value


class BatchTask(TaskCreate):
    array_index: int | None = Field(None, ge=0, le=1_000_000_000, description="the index the task gets in its array")


class ArrayBody(Strict):
    max_running: int | None = Field(None, ge=1, le=100_000, description="at most this many of the array run at once")


class TaskBatch(Strict):
    """``POST /tasks/batch``: up to MAX_BATCH tasks in one transaction; ``script`` (the
    code: repo, commit, diff) is given once for every task that has none of its own."""

    tasks: list[BatchTask] = Field(min_length=1, max_length=10_000)
    array: ArrayBody | None = None
    script: ScriptBody | None = None


class EnqueueBody(Strict):
    queue: QueueName
    head: bool = False


class CloneBody(Strict):
    queue: QueueName | None = None
    name: Text | None = None
    command: list[Annotated[str, Field(max_length=100_000)]] | None = Field(None, min_length=1, max_length=10_000)
    env: Env | None = None

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value[0] or any("\0" in part for part in value)):
            raise ValueError("expected a non-empty program name and no NUL characters")
        return value


class AbortBody(Strict):
    reason: str = Field("", max_length=1000)

    check_reason = field_validator("reason")(_no_nul)


class QueueCreate(Strict):
    name: QueueName
    tags: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(default_factory=list, max_length=100)


class QueueUpdate(Strict):
    tags: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(max_length=100)


class WorkersCreate(Strict):
    """``up``: bare queue names make a static worker, ``NAME=COUNT`` /
    ``NAME=MIN-MAX`` / ``NAME=-MAX`` the dynamic pool, ``services_mode`` the
    services worker (``services_max`` at once; none: no limit)."""

    queues: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(min_length=1, max_length=100)
    gpus: str | None = Field(None, min_length=1, max_length=200)
    cpu_only: bool = False
    services_mode: bool = False
    services_max: ServicesMax | None = None
    order_fairness: bool = False
    create_queue: bool = False
    uptime: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list, max_length=50)
    downtime: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list, max_length=50)
    docker: str | None = Field(None, max_length=500, description="docker mode; '' uses agent.default_docker.image")
    docker_args: list[Annotated[str, Field(min_length=1, max_length=4000)]] = Field(
        default_factory=list, max_length=200, description="the worker's docker arguments (daemon --docker IMAGE ARGS)"
    )
    worker_name: str | None = Field(
        None, max_length=200, description="replaces the host part of the id; '' is the host name, none the manager's"
    )
    worker_id: str | None = Field(None, max_length=200, description="a fixed worker id; '' none, none the manager's")


class RuntimePropertyBody(Strict):
    value: str = Field(min_length=1, max_length=200)
    expiry: ExpirySeconds | None = None


class LoginBody(Strict):
    code: str = Field(min_length=1, max_length=256)


class StopBody(Strict):
    drain: bool = False
    requeue: bool = False


WorkerName = Annotated[str, AfterValidator(as_value_error(worker_id))]
MAX_LOG_POST = 1024 * 1024  # characters of output in one ``log`` post of a remote executor


class RemoteStartBody(Strict):
    """A remote executor (``fleet/remote_executor.py``) starts a task: itself, or a clone."""

    worker: WorkerName = Field(description="the executor's id, shown as the task's worker")
    gpus: list[GpuIndex] = Field(default_factory=list, max_length=1024)
    clone: bool = False

    @field_validator("gpus")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("expected distinct GPU indexes")
        return value


class RemoteLogBody(Strict):
    """Output of the running attempt (may be empty: a heartbeat)."""

    attempt: Attempt
    text: str = Field("", max_length=MAX_LOG_POST)


class RemoteFinishBody(Strict):
    """How the attempt ended: ``stopped`` when the executor stopped the command
    (an abort, or its own SIGTERM), ``timed_out`` when the task's timeout did."""

    attempt: Attempt
    exit_code: ExitCode | None = None
    stopped: bool = False
    timed_out: bool = False
    reason: str = Field("", max_length=2000)
