"""Running a task as the OS user who submitted it (``fleet.run_as_submitter``).

With the option on and a manager running as root, a task whose ``user`` is
not the manager's own runs with that user's uid, primary gid and
supplementary groups (``initgroups``), as Slurm does; ``HOME``, ``USER`` and
``LOGNAME`` are theirs.  Root is never handed out: everything that runs code
from the task runs as its user.  Who switches, and when:

* A plain command: ``subprocess.Popen(user=, group=, extra_groups=)`` between
  ``fork`` and ``exec``.  The worker keeps the read end of the output pipe,
  so the log is captured as before.
* A task to prepare (code, setup script, environment): the preparing step
  (:mod:`fleet.worker.prepare`) starts as root, reads what only root may
  (the worker's hand-over file; it opens its launch record), makes the
  user's folders (:mod:`fleet.worker.userarea`), then gives up root for
  good with :meth:`RunAs.become` before the first ``git`` call: the
  checkout, the setup script, the build (``setup.py`` and build backends run
  arbitrary code) and the task all run as the user.
* A docker task: the launcher stays root (it alone talks to the docker
  socket, which no task ever gets) and runs the checkout in a child that has
  become the user (:func:`call_as`); every container (the environment's
  build and the task) runs as ``--user uid:gid`` with the user's groups,
  ``no-new-privileges`` and no capabilities (:func:`container_identity`).
  A task's own docker arguments are limited to those that give no more
  than the user already has (:func:`unsafe_docker_argument`): a task asking
  for a bind mount, a device, a capability, another user or the host's
  namespaces is refused at submit (422) and, should one reach a worker, at
  launch; neither ever runs it as root.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fleet.core.config import Config
from fleet.core.errors import FleetError, UsageError
from fleet.core.models import TaskSpec


@dataclass(frozen=True)
class RunAs:
    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return {**base, "HOME": self.home, "USER": self.user, "LOGNAME": self.user}

    def become(self) -> None:
        """Give up root for good in this process: groups, then gid, then uid (real,
        effective and saved), as ``Popen(user=...)`` does for a plain task.
        ``PermissionError`` when root could be had back (never go on then)."""
        os.setgroups(list(self.groups))
        os.setgid(self.gid)
        os.setuid(self.uid)
        if os.getresuid() != (self.uid,) * 3 or os.getresgid() != (self.gid,) * 3:
            raise PermissionError(errno.EPERM, f"could not become {self.user}")
        if self.uid != 0:
            try:
                os.setuid(0)
            except PermissionError:
                return
            raise PermissionError(errno.EPERM, f"became {self.user} but could still become root")


def switches_user(config: Config, user: str) -> bool:
    """True when a task of ``user`` would run as someone other than this process."""
    if not config.fleet.run_as_submitter or os.geteuid() != 0:
        return False
    try:
        return user != pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return True


def run_as(config: Config, user: str) -> RunAs | None:
    """Whom a task of ``user`` runs as; None for this process's own user.
    ``PermissionError`` when it must switch and cannot."""
    if not switches_user(config, user):
        return None
    if not user:
        raise PermissionError(errno.EPERM, "fleet.run_as_submitter is on and the task names no submitting user")
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PermissionError(errno.EPERM, f"fleet.run_as_submitter: no user {user!r} on this host") from None
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)


# -- docker ---------------------------------------------------------------------------

# A task's own docker arguments that give its container nothing its user lacks on the
# host.  Everything else (-v, --mount, --volumes-from, --device, --privileged, --cap-add,
# --security-opt, -u, --group-add, --userns, --pid, --uts, --cgroup*, --runtime,
# --sysctl, -p, --env-file and --label-file (host files read as root), --log-*,
# --restart, --gpus (GPUs are the scheduler's to give), ...) is refused for a task
# that runs as its submitter.
SAFE_DOCKER_FLAGS = frozenset(
    {
        "--env",
        "--label",
        "--workdir",
        "--name",
        "--entrypoint",
        "--hostname",
        "--add-host",
        "--dns",
        "--dns-search",
        "--dns-option",
        "--shm-size",
        "--tmpfs",
        "--cpus",
        "--cpu-shares",
        "--cpu-period",
        "--cpu-quota",
        "--cpuset-cpus",
        "--cpuset-mems",
        "--memory",
        "--memory-swap",
        "--memory-reservation",
        "--pids-limit",
        "--cap-drop",
        "--stop-signal",
        "--health-cmd",
        "--health-interval",
        "--health-timeout",
        "--health-start-period",
        "--health-retries",
        "--no-healthcheck",
        "--read-only",
        "--rm",
        "--detach",
        "--init",
        "--network",
        "--ipc",
        "--platform",
    }
)
SAFE_VALUES = {"--network": ("none", "bridge", "host", "default"), "--ipc": ("none", "private", "shareable")}
ALIASES = {"-e": "--env", "-l": "--label", "-w": "--workdir", "-h": "--hostname", "-m": "--memory"}
ALIASES |= {"-c": "--cpu-shares", "-d": "--detach", "--net": "--network", "--dns-opt": "--dns-option"}
FLAGS_WITHOUT_VALUE = frozenset({"--no-healthcheck", "--read-only", "--rm", "--detach", "--init"})


def unsafe_docker_argument(args: Sequence[str]) -> str | None:
    """Why a task's own ``docker run`` arguments would give a container of its
    user more than that user has on the host; None when they would not."""
    rest = list(args)
    while rest:
        token = rest.pop(0)
        if not token.startswith("-"):
            return f"{token!r} is not a docker run option"
        flag, eq, value = token.partition("=")
        flag = ALIASES.get(flag, flag)
        if flag not in SAFE_DOCKER_FLAGS:
            return f"{flag} could give the container more than its user has on the host"
        if flag in FLAGS_WITHOUT_VALUE or eq:
            pass
        elif rest:
            value = rest.pop(0)
        allowed = SAFE_VALUES.get(flag)
        if allowed is not None and value not in allowed:
            return f"{flag} {value} could give the container more than its user has on the host"
    return None


def container_identity(who: RunAs, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` (SDK keyword arguments) with the container run as ``who``: its
    uid:gid, its groups, no setuid way back up, no capabilities."""
    out = dict(options)
    out["user"] = f"{who.uid}:{who.gid}"
    out["group_add"] = [str(g) for g in who.groups if g != who.gid]
    out["security_opt"] = [*(o for o in out.get("security_opt") or [] if o != "no-new-privileges"), "no-new-privileges"]
    out["cap_drop"] = ["ALL"]
    out.pop("cap_add", None)
    out.pop("privileged", None)
    return out


# -- submit ---------------------------------------------------------------------------


def refuse_unrunnable(config: Config, spec: TaskSpec) -> None:
    """Refuse, at submit, a task that cannot run as its submitter (see the module)."""
    if not switches_user(config, spec.user) or spec.docker is None:
        return
    why = unsafe_docker_argument(spec.docker.args)
    if why is not None:
        raise UsageError(
            f"docker: with fleet.run_as_submitter a task of {spec.user} runs as {spec.user}, and {why}: "
            "leave it out (env, limits, network, ipc, shm-size and tmpfs are allowed)",
            field="docker",
        )


# -- a step as the user, from a process that stays root ---------------------------------


class StepAsUserFailed(FleetError):
    """A step run as the task's user failed; the message is its reason."""


def call_as(who: RunAs, step: Callable[[], Any]) -> Any:
    """``step()`` run in a child process that has become ``who``; its result (JSON)
    comes back.  The child shares this process's output (the task log) and its
    process group (an abort ends it too), and no other descriptor.  ``StepAsUserFailed`` with the
    step's message when it raises or the child dies."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.closerange(3, write_fd)  # nothing of root's (the docker socket's connection) goes along
            os.closerange(write_fd + 1, os.sysconf("SC_OPEN_MAX"))
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            who.become()
            body: dict[str, Any] = {"ok": step()}
        except FleetError as exc:
            body = {"error": exc.message}
        except BaseException as exc:  # anything: it is reported, and the child ends here
            body = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            data = json.dumps(body).encode()
            while data:
                data = data[os.write(write_fd, data) :]
        except BaseException:
            code = 1
        os._exit(code)
    os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as pipe:
        while chunk := pipe.read(65536):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    try:
        body = json.loads(b"".join(chunks))
    except ValueError:
        from fleet.core.procs import describe_exit

        ended = describe_exit(os.waitstatus_to_exitcode(status))
        raise StepAsUserFailed(f"the step run as {who.user} ended early ({ended})") from None
    if "error" in body:
        raise StepAsUserFailed(str(body["error"]))
    return body["ok"]
