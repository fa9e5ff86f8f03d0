"""Docker mode for a task that runs as its submitter (``fleet.run_as_submitter``).

The launcher (:mod:`fleet.worker.docker.run`) stays root: it alone talks to
the docker socket.  What differs for a task of another user:

* The code is checked out by a child that has become the user
  (:func:`fleet.worker.runas.call_as`), with the user's vcs cache and git
  credentials, into ``docker/<task id>`` of their area
  (:mod:`fleet.worker.userarea`): a folder root made and handed over, in a
  folder only root can change, so the path docker mounts cannot be swapped
  for a link to something else before the container starts.
* A task without a repository has its own folder mounted, which its user
  names: only when nobody but root can change any folder above it (the user
  could otherwise replace it with a link to a folder they cannot reach, and
  the mount would give it to them), and only when the user can reach it.
  Anything else fails the task with that reason (:func:`mountable`).
* Every container (the environment's build and the task) runs as
  ``uid:gid`` with the user's groups, ``no-new-privileges`` (a setuid binary
  in the image gives nothing) and no capabilities; the download caches it
  mounts are the user's (``docker/pip``, ``uv``, ``poetry``), never the
  shared ``docker_pip_cache`` or ``docker_apt_cache``.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

from fleet.core.config import Config
from fleet.core.models import Task
from fleet.worker.docker.args import ContainerSpec
from fleet.worker.envs import Log
from fleet.worker.prepare import PrepareError, Preparer
from fleet.worker.runas import RunAs, call_as, container_identity
from fleet.worker.userarea import DOCKER_CACHES, UserArea, docker_folder, for_user

INSIDE = {"pip": "/root/.cache/pip", "uv": "/root/.cache/uv", "poetry": "/root/.cache/pypoetry"}
CACHE_ENV = {"pip": "PIP_CACHE_DIR", "uv": "UV_CACHE_DIR", "poetry": "POETRY_CACHE_DIR"}


def checkout(area: UserArea, config: Config, task: Task, out: Log) -> tuple[Path | None, Path]:
    """(checkout root or None, the task's folder), got as the task's user."""
    dest = docker_folder(area, task.id) if task.script.repo else area.home.work / task.id
    who = area.who

    def step() -> list[str | None]:
        preparer = Preparer(area.home, for_user(config), out, who.env(dict(os.environ)))
        root, folder = preparer.code(task, dest)
        if root is None:
            folder = mountable(folder, who)
        return [None if root is None else str(root), str(folder)]

    root, folder = call_as(who, step)
    return (None if root is None else Path(root)), Path(folder)


def mountable(folder: Path, who: RunAs) -> Path:
    """``folder`` resolved, when it is safe to mount for ``who`` (run as ``who``)."""
    real = Path(os.path.realpath(folder))
    if not os.access(real, os.R_OK | os.X_OK):
        raise PrepareError(f"docker mode: {who.user} cannot read the task's folder {real}")
    for above in real.parents:
        st = os.lstat(above)
        if st.st_uid != 0 or st.st_mode & 0o022:
            raise PrepareError(
                f"docker mode: the task's folder {real} is not mounted for {who.user}: {above} "
                f"(mode {stat.S_IMODE(st.st_mode):04o}, uid {st.st_uid}) can be changed by someone but root, "
                "who could swap the folder for another before the container starts; submit from a git "
                "repository (fleet checks it out), or from a folder under folders only root can change"
            )
    return real


def cache_volumes(area: UserArea, config: Config) -> dict[str, dict[str, str]]:
    """The user's download caches, where ``docker_internal_mounts`` says."""
    inside = config.agent.docker_internal_mounts
    if not config.agent.pip_download_cache.enabled:
        return {}
    keys = {"pip": "pip_cache", "uv": "uv_cache", "poetry": "poetry_cache"}
    return {
        str(area.docker / name): {"bind": str(inside.get(keys[name]) or INSIDE[name]), "mode": "rw"}
        for name in DOCKER_CACHES
    }


def as_user(spec: ContainerSpec, area: UserArea) -> ContainerSpec:
    """``spec`` run as the area's user (the task's container; the build container derives from it)."""
    environment = dict(spec.environment)
    for name in DOCKER_CACHES:  # the user has no home in the image: the tools are told where their caches are
        bind = spec.volumes.get(str(area.docker / name))
        if bind is not None:
            environment.setdefault(CACHE_ENV[name], bind["bind"])
    options = container_identity(area.who, spec.options)
    shown = [*spec.shown_args, f"--user={options['user']}", "--security-opt=no-new-privileges", "--cap-drop=ALL"]
    shown += [f"--group-add={group}" for group in options["group_add"]]
    return dataclasses.replace(spec, environment=environment, options=options, shown_args=shown)
