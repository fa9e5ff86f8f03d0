"""``fleetctl build --docker``: a docker image made from a task.

Made the way ClearML Agent makes one: a container of the task's image gets
the task's code and runs the same preparation as a docker task, then it is
committed.

Decisions:

* Base: the task's image (``submit --docker``), else
  ``agent.default_docker.image``; ``docker_force_pull`` is honoured.  The
  build container takes the ``--network``, ``--ipc``, ``--shm-size`` and
  ``-v`` of the task's docker arguments (or ``default_docker.arguments``)
  and of ``agent.extra_docker_arguments``, and the pip/uv download caches.
* Code: the checkout (vcs cache, commit, diff) is copied into the image at
  ``/fleet/code`` (a bind mount would not be part of the commit); the
  working directory is the task's folder in it.  A task without a
  repository carries no code: its folder is created empty, and its command
  must not need files from it.
* Environment: ``entry.sh build`` (``extra_docker_shell_script``, the setup
  script, a venv at ``/fleet/venv`` with the image's own Python and the
  task's requirements, as for a docker task) runs once, at build time; the
  image has the venv first on ``PATH``.  The image needs a Python.  The
  package manager settings are bind-mounted for the build only.
* Secrets are never baked into a layer: environment variables that are
  secret by name or by value (the masked ones, :mod:`fleet.core.secrets`) are
  left out of the build container and of the image, and named in the
  output; pass them with ``docker run -e``.
* Entry point: none — the image is the task's environment, a base image;
  its ``CMD`` is the task's command, which runs on its own, reporting to no
  one.  ``reuse_task`` / ``clone_task`` — the entry point is fleet's
  stdlib-only runner (:mod:`fleet.remote_executor`, copied to
  ``/fleet/run/remote.py``): run with ``FLEET_API_URL`` (and
  ``FLEET_API_TOKEN`` when the manager has one), it starts that task (or a
  clone of it) on the manager, streams the log there, follows aborts and
  records the end.  Arguments given to ``docker run`` replace the command.
* The build container is labelled ``fleet.build`` and not with this host's
  label, so a worker's orphan sweep never takes it; it is removed at the end
  whatever happens.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import re
import tarfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docker.utils import parse_repository_tag

from fleet.core.config import Config
from fleet.core.errors import UsageError
from fleet.core.home import Home
from fleet.core.models import Task
from fleet.core.secrets import is_secret
from fleet.worker.docker.args import ContainerSpec, choose_image, parse_docker_args
from fleet.worker.docker.container import DockerRunError, ensure_image, run_container
from fleet.worker.docker.run import cache_volumes
from fleet.worker.docker.scripts import (
    BUILD_ENV,
    ENTRY_POINTS,
    RUN_DIR,
    requirements_for,
    say,
    write_build_env,
    write_run_dir,
)
from fleet.worker.envs import Log
from fleet.worker.prepare import PrepareError, Preparer

log = logging.getLogger(__name__)

CODE_DIR = "/fleet/code"
VENV_DIR = "/fleet/venv"
LABEL_BUILD = "fleet.build"
LABEL_BUILT_FROM = "fleet.built_from"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUNNER = Path(__file__).resolve().parents[2] / "remote_executor.py"  # the standalone remote executor
_IMAGE_NAME = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"


@dataclass
class Built:
    image: str  # repository:tag
    image_id: str
    left_out: list[str] = field(default_factory=list)  # secret variables not baked in


def parse_target(target: str) -> tuple[str, str]:
    """``name[:tag]`` → (repository, tag); Docker's reference rules, a clear error otherwise."""
    repository, tag = parse_repository_tag(target.strip())
    tag = tag or "latest"
    path = repository.split("/")
    if "." in path[0] or ":" in path[0] or path[0] == "localhost":  # a registry host
        path = path[1:]
    ok = bool(path) and all(re.fullmatch(_IMAGE_NAME, part) for part in path)
    if not ok or not re.fullmatch(r"[\w][\w.-]{0,127}", tag) or "@" in target:
        raise UsageError(
            f"--target {target!r}: expected an image name like name:tag (lower-case letters, digits, . _ -)",
            field="target",
        )
    return repository, tag


def _safe_env(env: dict[str, str], extra_keys: list[str]) -> tuple[dict[str, str], list[str]]:
    kept = {k: v for k, v in env.items() if not is_secret(k, v, extra_keys)}
    return kept, sorted(set(env) - set(kept))


def _archive(entries: list[tuple[Path, str]], files: dict[str, bytes]) -> bytes:
    """A tar of host folders (``(path, name inside)``) and of in-memory files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, name in entries:
            tar.add(str(path), arcname=name.lstrip("/"))
        for name, data in files.items():
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _image_path(client: Any, image: str) -> str:
    for item in client.images.get(image).attrs.get("Config", {}).get("Env") or []:
        key, _, value = str(item).partition("=")
        if key == "PATH":
            return value
    return DEFAULT_PATH


def build_image(
    client: Any,
    home: Home,
    config: Config,
    task: Task,
    target: str,
    entry_point: str | None,
    work: Path,
    write: Callable[[str], None] | None = None,
) -> Built:
    """Build ``target`` from ``task``; ``work`` is an empty scratch folder on the host."""
    write = write or (lambda text: print(text, flush=True))
    repository, tag = parse_target(target)
    if entry_point is not None and entry_point not in ENTRY_POINTS:
        raise UsageError(
            f"--entry-point {entry_point!r}: expected one of {', '.join(ENTRY_POINTS)}", field="entry_point"
        )
    agent = config.agent
    image, args = choose_image(task.docker, "", agent.default_docker.image, agent.default_docker.arguments)
    opts = parse_docker_args([*args, *agent.extra_docker_arguments], os.environ)
    try:
        root, folder = Preparer(home, config, Log(write)).code(task, work / "code")
    except PrepareError as exc:
        raise DockerRunError(exc.message) from None
    if root is None:
        workdir = task.script.working_dir
    else:
        workdir = posixpath.normpath(posixpath.join(CODE_DIR, folder.relative_to(root).as_posix()))
    requirements = requirements_for(task, root, CODE_DIR)
    run_dir = work / "run"
    write_run_dir(run_dir, task, config, requirements)
    extra_keys = list(agent.hide_docker_command_env_vars.extra_keys)
    env, left_out = _safe_env({**task.env, **opts.environment}, extra_keys)
    env.update({"FLEET_VENV": VENV_DIR, "PYTHONUNBUFFERED": "1"})
    write_build_env(work / "build.env", config)
    volumes = {**cache_volumes(home, config), **opts.volumes}
    volumes[str(work / "build.env")] = {"bind": BUILD_ENV, "mode": "ro"}
    spec = ContainerSpec(
        image=image,
        command=["sh", f"{RUN_DIR}/entry.sh", "build"],
        name=f"fleet-build-{task.id[:12]}-{uuid.uuid4().hex[:8]}",
        labels={LABEL_BUILD: task.id},
        environment=env,
        volumes=volumes,
        working_dir=workdir,
        ipc_mode=opts.ipc_mode,
        shm_size=opts.shm_size,
        network_mode=opts.network_mode,
        as_mounts=True,
        options=opts.options,
        shown_args=opts.shown,
    )
    if left_out:
        say(f"not baked into the image (secrets): {', '.join(left_out)}; pass them with docker run -e")
    ensure_image(client, image, agent.docker_force_pull)
    files = {f"{RUN_DIR}/remote.py": RUNNER.read_bytes()} if entry_point else {}
    entries = [(run_dir, RUN_DIR)] + ([] if root is None else [(root, CODE_DIR)])
    archive = _archive(entries, files)
    command = list(task.script.command)
    settings: dict[str, Any] = {
        "Env": [f"{k}={v}" for k, v in env.items()]
        + [f"VIRTUAL_ENV={VENV_DIR}", f"PATH={VENV_DIR}/bin:{_image_path(client, image)}"],
        "WorkingDir": workdir,
        "Cmd": command,
        "Labels": {LABEL_BUILT_FROM: task.id},
    }
    if entry_point is not None:
        runner = [f"{VENV_DIR}/bin/python", f"{RUN_DIR}/remote.py", "--task", task.id]
        settings["Entrypoint"] = [*runner, *(["--clone"] if entry_point == "clone_task" else []), "--"]
    say(f"building image {repository}:{tag} from task {task.id} on {image}")
    committed: dict[str, str] = {}

    def prepared(container: Any) -> None:
        container.put_archive("/", archive)

    def commit(container: Any, code: int) -> None:
        if code == 0:
            committed["id"] = str(container.commit(repository=repository, tag=tag, conf=settings).id)

    code = run_container(client, spec, write=write, before_start=prepared, after_exit=commit)
    if code != 0:
        raise DockerRunError(f"building image {repository}:{tag} failed: the build container exited with {code}")
    return Built(f"{repository}:{tag}", committed["id"], left_out)
