"""How a launch went: the typed record a launcher leaves for the task runner.

A task is launched one of three ways (:class:`LaunchKind`), decided once by
:func:`fleet.worker.launch.plan_launch`: its command directly, through the
preparing step (``python -m fleet.worker.prepare``) or through the docker
launcher (``python -m fleet.worker.docker.run``).  The last two are the
task's process-group leader and then become the task (``exec``) or run it
in a container, so the runner learns only an exit status from the process
itself.  What the launcher did on the way is written here instead: the
phase it reached, whether it got through, and why not, as a kind the runner
acts on (:class:`Failure`) plus a one-line message for people.

Decisions:

* A file per attempt, ``$FLEET_HOME/work/<task id>-<attempt>.outcome.json``,
  found from (home, task, attempt) alone, like everything else of an attempt
  (:mod:`fleet.core.contain`); written with a rename, so a reader sees a whole
  record or none.  No record (a launcher that crashed before it knew the
  task) reads as "nothing known", and the verdict is the exit status's.
* The runner removes the record once the attempt's end is recorded, except
  when the launch found no disk space: then the record stays until the
  task's next attempt starts, because a pool reads it from the head of its
  queue to back off (:meth:`fleet.worker.gpupool.PoolLoop._backing_off`) however
  its per-task worker's exit and the requeue interleave.
* A launch that got through carries the environment it runs in
  (:class:`LaunchedEnvironment`: cached or built, the frozen packages, the
  manager and Python); the runner records it on the task when the attempt
  ends, so the preparing step never opens the store (it ``exec``s sooner).
* Only the standard library here: the runner imports this on the launch path.
"""

from __future__ import annotations

import enum
import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path

VERSION = 1


class LaunchKind(str, enum.Enum):
    """How a task's process is started."""

    PLAIN = "plain"  # its command, directly
    PREPARED = "prepared"  # fleet.worker.prepare: code, setup script, environment, then exec
    DOCKER = "docker"  # fleet.worker.docker.run: the task in a container


class Phase(str, enum.Enum):
    """The step a launcher was at (or reached: :attr:`TASK`)."""

    START = "start"  # loading the task
    CODE = "code"  # checkout, or the task's folder
    SETUP = "setup"  # the setup script (outside docker)
    IMAGE = "image"  # the task's image (docker)
    ENVIRONMENT = "environment"  # the Python environment
    TASK = "task"  # the task's own command (exec'd, or its container)


class Failure(str, enum.Enum):
    """Why a launch did not get through, as the runner acts on it."""

    NO_SPACE = "no_space"  # no disk space for the environment: back at the head of its queue, back off
    BAD_REPO = "bad_repo"  # the code could not be had (repository, diff, folder)
    SETUP_FAILED = "setup_failed"
    ENV_FAILED = "env_failed"
    DOCKER_FAILED = "docker_failed"  # engine, image, container
    CANNOT_EXEC = "cannot_exec"  # the task's command could not be started
    INTERNAL = "internal"  # fleet itself (its config, its store)


_BY_PHASE = {
    Phase.START: Failure.INTERNAL,
    Phase.CODE: Failure.BAD_REPO,
    Phase.SETUP: Failure.SETUP_FAILED,
    Phase.IMAGE: Failure.DOCKER_FAILED,
    Phase.ENVIRONMENT: Failure.ENV_FAILED,
    Phase.TASK: Failure.CANNOT_EXEC,
}


def failure_in(phase: Phase, exc: BaseException | None = None) -> Failure:
    """The kind of a failure in ``phase``; no disk space (the launcher's own
    check, or ``ENOSPC`` from an operation) is that whatever the phase."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return Failure.NO_SPACE
    return _BY_PHASE[phase]


@dataclass(frozen=True)
class LaunchedEnvironment:
    """The Python environment a prepared task runs in, as the store records it."""

    cached: bool
    frozen: list[str]
    manager: str
    python: str

    def encode(self) -> dict[str, object]:
        return {"cached": self.cached, "frozen": self.frozen, "manager": self.manager, "python": self.python}

    @classmethod
    def decode(cls, body: object) -> LaunchedEnvironment:
        if not isinstance(body, dict):
            raise ValueError("not a launched environment")
        cached, frozen, manager, python = body["cached"], body["frozen"], body["manager"], body["python"]
        if not (isinstance(cached, bool) and isinstance(frozen, list) and isinstance(manager, str)):
            raise ValueError("not a launched environment")
        if not isinstance(python, str) or not all(isinstance(line, str) for line in frozen):
            raise ValueError("not a launched environment")
        return cls(cached, list(frozen), manager, python)


@dataclass(frozen=True)
class LaunchOutcome:
    phase: Phase
    ok: bool
    failure: Failure | None = None  # set exactly when not ok
    message: str = ""
    environment: LaunchedEnvironment | None = None  # a prepared task's, once it got through

    def __post_init__(self) -> None:
        if self.ok != (self.failure is None):
            raise ValueError("a launch outcome has a failure kind exactly when it is not ok")

    @property
    def no_space(self) -> bool:
        return self.failure is Failure.NO_SPACE

    def encode(self) -> bytes:
        body: dict[str, object] = {"v": VERSION, "phase": self.phase.value, "ok": self.ok, "message": self.message}
        if self.failure is not None:
            body["failure"] = self.failure.value
        if self.environment is not None:
            body["environment"] = self.environment.encode()
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> LaunchOutcome:
        """``ValueError`` on anything but a record :meth:`encode` wrote."""
        try:
            body = json.loads(data)
            if not isinstance(body, dict) or body.get("v") != VERSION:
                raise ValueError("not a launch outcome record")
            failure = body.get("failure")
            ok, message = body["ok"], body.get("message", "")
            if not isinstance(ok, bool) or not isinstance(message, str):
                raise ValueError("not a launch outcome record")
            env = body.get("environment")
            environment = None if env is None else LaunchedEnvironment.decode(env)
            kind = None if failure is None else Failure(failure)
            return cls(Phase(body["phase"]), ok, kind, message, environment)
        except (KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a launch outcome record: {exc}") from None

    @classmethod
    def failed(
        cls, phase: Phase, message: str, exc: BaseException | None = None, failure: Failure | None = None
    ) -> LaunchOutcome:
        """A failure in ``phase``: of the kind given, else the phase's (:func:`failure_in`)."""
        return cls(phase, False, failure or failure_in(phase, exc), message)


def outcome_path(home: Path, task_id: str, attempt: int) -> Path:
    return home / "work" / f"{task_id}-{attempt}.outcome.json"


def write_outcome(path: Path, outcome: LaunchOutcome) -> None:
    """Best effort: a record that cannot be written (a full disk) is left out,
    and the runner judges by the exit status alone."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, outcome.encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


class Report:
    """Where a launcher leaves its record: written with a rename (:func:`write_outcome`),
    or, once :meth:`hold` has opened it, in place through that descriptor.

    A launcher that gives up root (a task of another user: :mod:`fleet.worker.runas`)
    opens its record first, in the owner-only work folder it could not reach
    afterwards; the descriptor is close-on-exec, so the task never gets it.  An
    empty or half-written file reads as no record, as a missing one does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def hold(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)

    def write(self, outcome: LaunchOutcome) -> None:
        """Best effort, as :func:`write_outcome`."""
        if self.fd is None:
            write_outcome(self.path, outcome)
            return
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, outcome.encode(), 0)
        except OSError:
            pass


def read_outcome(path: Path) -> LaunchOutcome | None:
    """The record at ``path``; None when there is none or it is not one."""
    try:
        with open(path, "rb") as fh:
            return LaunchOutcome.decode(fh.read(65536))
    except (OSError, ValueError):
        return None


def remove_outcome(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
