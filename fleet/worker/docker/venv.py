"""The task's Python environment in docker mode, kept in the venv cache.

Decisions:

* The environment is built by a short container of the task's own image
  (``entry.sh build``: extra script, setup script, ``python -m venv`` and
  ``pip install -r``), because a venv built on the host points at the host's
  interpreter.  It is built into a host folder bound at the *same path*
  inside the container, so the venv's absolute paths read the same in the
  build container and in the task's container, which mounts it read-only.
* It lives in the same cache as the environments built outside docker
  (``agent.venvs_cache``: LRU, per-key build lock, shared use lock held for
  as long as the task's container runs).  The key is the image's *id* (a tag
  moved to another image is another environment), the requirement lines,
  and the extra and setup scripts, which run before the build and may
  install what pip compiles against.
* Requirements that name local paths, or a disabled cache: the environment
  is built for this task only, in ``<venvs_dir>/<task id>``, and removed
  when the task ends.  Below ``free_space_threshold_gb`` (a cache miss with
  no room even after evicting, or a one-off build) none is built:
  :class:`~fleet.worker.prepare.NoSpaceForEnvironment`, as outside docker.
* The package manager settings that decide the build are in the key too
  (:func:`fleet.worker.docker.scripts.build_settings`).
* The build container has the task container's volumes, network and
  environment but no GPUs.  On a cache miss the setup script therefore runs
  twice (build, then task): the task's container starts from the image, not
  from the build container.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.core.config import Config
from fleet.core.home import Home
from fleet.worker.docker.args import ContainerSpec
from fleet.worker.docker.scripts import (
    BUILD_ENV,
    FROZEN,
    MANAGER,
    RUN_DIR,
    build_settings,
    say,
    scripts_digest,
    write_build_env,
)
from fleet.worker.envs.builder import Log, Requirements
from fleet.worker.envs.cache import Lease, VenvCache, cache_key, stamp_info
from fleet.worker.envs.settings import builds_dir, cache_root
from fleet.worker.prepare import check_space
from fleet.worker.userarea import UserArea, hand_over, read_user_file


class EnvironmentBuildFailed(Exception):
    """The build container exited non-zero; the message is the task's reason."""


@dataclass
class DockerEnvironment:
    path: Path
    cached: bool
    frozen: list[str]
    python: str
    manager: str
    lease: Lease | None = None

    def release(self) -> None:
        """Let the cache evict it again; a one-off build is removed."""
        if self.lease is not None:
            self.lease.release()
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def owner() -> str:
    return f"{os.getuid()}:{os.getgid()}"


def builder_spec(task_spec: ContainerSpec, target: Path, build_env: Path) -> ContainerSpec:
    """The build container: the task's container without GPUs, running ``entry.sh build``."""
    environment = {**task_spec.environment, "FLEET_VENV": str(target)}
    if os.getuid() != 0:
        environment["FLEET_OWNER"] = owner()
    volumes = {
        **task_spec.volumes,
        str(target): {"bind": str(target), "mode": "rw"},
        str(build_env): {"bind": BUILD_ENV, "mode": "ro"},
    }
    return dataclasses.replace(
        task_spec,
        command=["sh", f"{RUN_DIR}/entry.sh", "build"],
        name=f"{task_spec.name}-env"[:255],
        environment=environment,
        volumes=volumes,
        gpus=[],
    )


def _frozen(path: Path) -> list[str]:
    try:
        text = read_user_file(path / FROZEN)
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()]


def _python_version(path: Path) -> str:
    """The venv's Python version, from its ``pyvenv.cfg``."""
    try:
        for line in read_user_file(path / "pyvenv.cfg").splitlines():
            key, _, value = line.partition("=")
            if key.strip() in ("version", "version_info"):
                return value.strip()
    except OSError:
        pass
    return ""


def docker_environment(
    home: Home,
    config: Config,
    task_id: str,
    image_id: str,
    requirements: Requirements,
    run_dir: Path,
    task_spec: ContainerSpec,
    run: Callable[[ContainerSpec], int],
    area: UserArea | None = None,
) -> DockerEnvironment:
    """Reuse or build the environment; ``run(spec)`` runs a container and returns its exit code.

    ``area``: the task runs as its submitter (:mod:`fleet.worker.docker.asuser`): the cache is
    that user's (``docker/venvs`` of their area, its locks and markers root's), each environment
    a folder root makes and hands to the user, whose build container fills it; root reads
    what the build wrote there without following links (:func:`read_user_file`)."""
    agent = config.agent

    def build(path: Path) -> dict[str, Any]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(exist_ok=True)
        if area is not None:
            hand_over(path, area.who)
        say(f"building the environment ({len(requirements.lines)} requirement(s)) in a container of {image_id[:19]}")
        build_env = run_dir.parent / f"{task_id}.build.env"
        write_build_env(build_env, config)
        if area is not None:  # the build container runs as the user: it must read it
            os.chown(build_env, area.who.uid, area.who.gid)
        try:
            code = run(builder_spec(task_spec, path, build_env))
        finally:
            build_env.unlink(missing_ok=True)
        if code != 0:
            shutil.rmtree(path, ignore_errors=True)
            raise EnvironmentBuildFailed(f"docker mode: building the task's environment failed (exit code {code})")
        try:
            manager = read_user_file(path / MANAGER, 64).strip() or "pip"
        except OSError:
            manager = "pip"
        return stamp_info(frozen=_frozen(path), manager=manager, python=_python_version(path), image=image_id)

    root = cache_root(home, agent) if area is None else area.docker_venvs
    cache = VenvCache(root, agent.venvs_cache.max_entries, agent.venvs_cache.free_space_threshold_gb)
    if cache.enabled and requirements.cacheable:
        material = {
            "kind": "docker",
            "image": image_id,
            "requirements": list(requirements.lines),
            "scripts": scripts_digest(run_dir),
            "settings": build_settings(config),
            "owner": owner() if area is None else f"{area.who.uid}:{area.who.gid}",
        }
        lease = cache.acquire(cache_key(material), build, Log(lambda text: print(text, flush=True)))
        if lease is not None:
            if lease.cached:
                say(f"reusing cached environment {lease.key[:12]}")
            info = lease.info
            frozen, python, manager = list(info.get("frozen", [])), str(info["python"]), str(info["manager"])
            return DockerEnvironment(lease.path, lease.cached, frozen, python, manager, lease)
        check_space(cache.root, agent.venvs_cache.free_space_threshold_gb)  # a miss and no room even after evicting
    elif not requirements.cacheable:
        say("requirements name local paths; building an environment for this task only")
    path = builds_dir(home, agent) / task_id if area is None else area.docker / f"{task_id}.venv"
    check_space(path.parent, agent.venvs_cache.free_space_threshold_gb)
    shutil.rmtree(path, ignore_errors=True)
    info = build(path)
    return DockerEnvironment(path, False, list(info["frozen"]), str(info["python"]), str(info["manager"]))
