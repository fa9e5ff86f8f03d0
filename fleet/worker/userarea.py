"""The folders and caches of a task that runs as its submitter, one area per user.

With ``fleet.run_as_submitter`` a task's code, environment and downloads are
made by its user (:mod:`fleet.worker.runas`), so caches shared between users
would let one user plant code for another: a wheel in a download cache, a
package in a cached environment, a commit in a mirror.  So each user gets
their own of everything, and nobody else can write to it::

    <users_dir>/                 root, 0711   fleet.users_dir, default $FLEET_HOME/users
      u<uid>/                    root, 0711   made by root: nothing in it can be swapped by its user
        work/ vcs-cache/ venvs-cache/ venvs-builds/ cache/
                                 the user, 0700: a FLEET_HOME of theirs (:meth:`UserArea.home`):
                                 checkouts, mirrors, environments, one-off builds, pip/uv/poetry
                                 downloads and the interpreter list
        docker/                  root, 0711   what a docker task's containers mount
          <task id>/             the user, 0700: the checkout
          pip/ uv/ poetry/       the user, 0700: download caches
          venvs/                 root, 0700: the environment cache (locks, markers: root's)
            <key>/               the user: an environment, built by their container

Decisions:

* Root makes every folder its user writes into and hands it over (``chown``),
  inside folders only root can change, so a path root acts on or hands to
  docker as a mount is never one the user can swap for a link (a mounted
  link would give the container whatever it points at).  Root never
  writes inside a user's folder; it reads only through
  :func:`read_user_file` (no links followed, no FIFO, bounded).
* The cache paths set in ``agent`` (``venvs_cache.path``, ``vcs_cache.path``,
  ``pip_download_cache.path``, ``venvs_dir``) are the manager's user's; a
  task of another user uses its area instead (:func:`for_user`), and fleet's
  own git credentials (``agent.git_user`` / ``git_pass``) are not given to
  it: it clones with its user's own (their ``HOME``: ssh keys, credential
  helpers), as a job on a shared cluster does.
* The area must be reachable by its user (every folder above it searchable):
  a ``FLEET_HOME`` under ``/root`` is not, so the worker says so and names
  ``fleet.users_dir`` rather than letting the checkout fail obscurely.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from fleet.core.config import AgentConfig, Config
from fleet.core.home import Home
from fleet.worker.runas import RunAs

USER_FOLDERS = ("work", "vcs-cache", "venvs-cache", "venvs-builds", "cache")
DOCKER_CACHES = ("pip", "uv", "poetry")
READ_LIMIT = 1 << 20


def users_dir(home: Home, config: Config) -> Path:
    configured = config.fleet.users_dir
    return Path(configured).expanduser().absolute() if configured else home.root / "users"


@dataclass(frozen=True)
class UserArea:
    root: Path  # <users_dir>/u<uid>
    who: RunAs

    @property
    def home(self) -> Home:
        """A home of the user's own: ``work``, the caches and the one-off builds
        resolve under it as they do under ``FLEET_HOME``."""
        return Home(self.root)

    @property
    def docker(self) -> Path:
        return self.root / "docker"

    @property
    def docker_venvs(self) -> Path:
        return self.docker / "venvs"


def area_of(home: Home, config: Config, who: RunAs) -> UserArea:
    return UserArea(users_dir(home, config) / f"u{who.uid}", who)


def ensure_area(home: Home, config: Config, who: RunAs) -> UserArea:
    """The user's area, made as root where missing and checked where present
    (``PermissionError`` naming what is wrong: never used then)."""
    area = area_of(home, config, who)
    _root_folder(area.root.parent, 0o711)
    _root_folder(area.root, 0o711)
    for name in USER_FOLDERS:
        _users_folder(area.root / name, who)
    _root_folder(area.docker, 0o711)
    for name in DOCKER_CACHES:
        _users_folder(area.docker / name, who)
    _root_folder(area.docker_venvs, 0o700)
    _check_reachable(area.root, who)
    return area


def docker_folder(area: UserArea, name: str) -> Path:
    """A new, empty folder ``docker/<name>`` of the user's (an earlier attempt's removed)."""
    path = area.docker / name
    if os.path.lexists(path):
        _remove(path)
    _users_folder(path, area.who)
    return path


def hand_over(path: Path, who: RunAs) -> None:
    """A folder root just made (inside a folder of root's) given to ``who``."""
    os.lchown(path, who.uid, who.gid)
    os.chmod(path, 0o700, follow_symlinks=False)


def for_user(config: Config) -> Config:
    """The config a task of another user is prepared with: its area's caches
    (the configured paths are the manager's user's) and none of fleet's secrets."""
    agent = config.agent
    defaults = AgentConfig()
    agent = dataclasses.replace(
        agent,
        git_user="",
        git_pass="",
        venvs_dir=defaults.venvs_dir,
        venvs_cache=dataclasses.replace(agent.venvs_cache, path=""),
        vcs_cache=dataclasses.replace(agent.vcs_cache, path=""),
        pip_download_cache=dataclasses.replace(agent.pip_download_cache, path=""),
        docker_pip_cache="",
        docker_apt_cache="",
    )
    api = dataclasses.replace(config.fleet.api, token="", secret_key="")
    fleet = dataclasses.replace(config.fleet, api=api, store=dataclasses.replace(config.fleet.store, url=""))
    return dataclasses.replace(config, agent=agent, fleet=fleet)


def read_user_file(path: Path, limit: int = READ_LIMIT) -> str:
    """A file in a user's folder, read as root: never through a link, never a FIFO
    or device, at most ``limit`` bytes.  ``OSError`` when it is not a plain file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a plain file")
        data = b""
        while len(data) < limit:
            chunk = os.read(fd, limit - len(data))
            if not chunk:
                break
            data += chunk
        return data.decode("utf-8", "replace")
    finally:
        os.close(fd)


# -- the checks ---------------------------------------------------------------------------


def _root_folder(path: Path, mode: int) -> None:
    """``path``, a folder of root's that only root may change."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise PermissionError(f"fleet.run_as_submitter: {path} is not a folder of this manager's user; not used")
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def _users_folder(path: Path, who: RunAs) -> None:
    """``path`` (in a folder of root's), a folder of ``who``'s alone."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != who.uid:
            raise PermissionError(f"fleet.run_as_submitter: {path} is not a folder of {who.user}'s; not used") from None
        return
    hand_over(path, who)


def _remove(path: Path) -> None:
    """Remove ``path`` (in a folder of root's) without following a link in it."""
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
    else:
        shutil.rmtree(path)  # fd-based on Linux: a link inside is removed, never followed


def _check_reachable(path: Path, who: RunAs) -> None:
    """``PermissionError`` unless ``who`` may search every folder down to ``path``."""
    for folder in reversed([path, *path.parents]):
        st = os.stat(folder)
        mode = st.st_mode
        if st.st_uid == who.uid:
            ok = bool(mode & stat.S_IXUSR)
        elif st.st_gid in who.groups:
            ok = bool(mode & stat.S_IXGRP)
        else:
            ok = bool(mode & stat.S_IXOTH)
        if not ok:
            raise PermissionError(
                f"fleet.run_as_submitter: {who.user} cannot reach {path} ({folder} is mode "
                f"{stat.S_IMODE(mode):04o}); set fleet.users_dir to a folder every submitter can reach"
            )
