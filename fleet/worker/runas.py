"""Running a task as the OS user who submitted it (``fleet.run_as_submitter``).

With the option on and a manager running as root, a task whose ``user`` is
not the manager's own runs with that user's uid, primary gid and
supplementary groups (``initgroups``), set in the child between ``fork`` and
``exec`` by ``subprocess.Popen(user=, group=, extra_groups=)``, as Slurm
does; ``HOME``, ``USER`` and ``LOGNAME`` are theirs.  The worker keeps the
read end of the task's output pipe, so the log is captured as before.

Only plain command tasks can run so yet: preparing code or an environment
(``fleet.worker.prepare``) and docker runs need the manager's home and
database, which are the manager's user's alone.  Such a task is refused at
submit (422 naming the field), and a docker worker that claims a task of
another user fails it with that reason; neither ever runs it as root.
"""

from __future__ import annotations

import errno
import os
import pwd
from dataclasses import dataclass

from fleet.core.config import Config
from fleet.core.errors import UsageError
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


def refuse_unrunnable(config: Config, spec: TaskSpec) -> None:
    """Refuse, at submit, a task that cannot yet run as its submitter (see the module)."""
    if not switches_user(config, spec.user):
        return
    script, reqs = spec.script, spec.requirements
    reasons = (
        ("script", "a repository", bool(script.repo)),
        ("setup_script", "a setup script", bool((script.setup_script or "").strip())),
        ("requirements", "requirements", bool(reqs.packages or reqs.file.strip())),
        ("docker", "a docker image", spec.docker is not None),
    )
    for field, what, present in reasons:
        if present:
            raise UsageError(
                f"{field}: with fleet.run_as_submitter a task of {spec.user} runs as {spec.user}, and a task with "
                f"{what} cannot yet: submit a plain command (prepare its environment yourself)",
                field=field,
            )
