"""The files a task's container reads from ``/fleet/run``: one fixed entry
script, and the task's extra script, setup script and requirements.

The entry script has two modes, so a container that builds the environment
(:mod:`fleet.worker.docker.venv`, :mod:`fleet.worker.docker.image`) and the
container that runs the task prepare the same way:

* ``sh entry.sh build`` — ``extra_docker_shell_script``, the task's setup
  script, then a venv in ``$FLEET_VENV`` from ``requirements.txt`` with the
  image's own Python; its ``pip freeze`` goes to ``$FLEET_VENV/.fleet-frozen``
  and the installer used to ``.fleet-manager``.
  With ``$FLEET_OWNER`` (``uid:gid``) the venv is handed to that user at the
  end, so a worker that is not root can evict it from its cache later.
  The package manager settings come from ``/fleet/build.env``
  (:func:`write_build_env`), a file bind-mounted for the build only, so an
  index URL with credentials never lands in a committed image.

Decisions for the environment in a container (``agent.package_manager``):

* ``type: uv`` uses the image's ``uv`` when it has one (``uv venv`` + ``uv pip
  install``), else pip with a note; pip, poetry and conda use pip (a
  poetry project or a conda environment cannot be made from the image's
  Python alone).
* The venv always inherits the image's packages (``--system-site-packages``),
  as ClearML Agent's docker mode does: a requirement the image already
  satisfies (the ``torch`` of a PyTorch image) is not installed again.
* ``pip_version``, ``force_upgrade`` and ``extra_index_url`` are honoured;
  the priority and post package lists are not (outside docker only).
* ``sh entry.sh run COMMAND...`` — the extra and setup scripts, then the
  environment in ``$FLEET_VENV`` (when set) is activated and ``exec "$@"``
  runs the task's command: no shell string is ever built from task fields.

Only POSIX ``sh`` and Python are assumed in the image (no coreutils).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from fleet.core.config import Config
from fleet.core.models import Task
from fleet.worker.envs.builder import Requirements, pip_version_spec
from fleet.worker.envs.requirements import gather

RUN_DIR = "/fleet/run"
BUILD_ENV = "/fleet/build.env"
ENTRY_POINTS = ("reuse_task", "clone_task")  # build --docker --entry-point: run the task, or a clone
FROZEN = ".fleet-frozen"  # in the venv: its pip freeze
MANAGER = ".fleet-manager"  # in the venv: uv or pip, what built it
ENTRY = """\
set -e
mode="$1"
shift
if [ -f /fleet/run/extra.sh ]; then
  echo "[docker] running extra_docker_shell_script"
  sh /fleet/run/extra.sh
fi
if [ -f /fleet/run/setup.sh ]; then
  echo "[docker] running the setup script"
  if command -v bash >/dev/null 2>&1; then bash /fleet/run/setup.sh; else sh /fleet/run/setup.sh; fi
fi
if [ "$mode" = build ]; then
  if [ -f /fleet/build.env ]; then . /fleet/build.env; fi
  PY=$(command -v python3 || command -v python || true)
  if [ -z "$PY" ]; then
    echo "[docker] the image has no python3 or python: cannot build the task's environment" >&2
    exit 1
  fi
  if [ "$FLEET_MANAGER" = uv ] && command -v uv >/dev/null 2>&1; then
    echo "[docker] building the task's environment in $FLEET_VENV with uv and $PY"
    uv venv --quiet --system-site-packages --python "$PY" "$FLEET_VENV"
    if [ -f /fleet/run/requirements.txt ]; then
      uv pip install --python "$FLEET_VENV/bin/python" $FLEET_UPGRADE -r /fleet/run/requirements.txt
    fi
    uv pip freeze --python "$FLEET_VENV/bin/python" > "$FLEET_VENV/.fleet-frozen"
    echo uv > "$FLEET_VENV/.fleet-manager"
  else
    if [ "$FLEET_MANAGER" = uv ]; then echo "[docker] the image has no uv: using pip"; fi
    echo "[docker] building the task's environment in $FLEET_VENV with $PY"
    "$PY" -m venv --system-site-packages "$FLEET_VENV"
    if [ -n "$FLEET_PIP_VERSION" ]; then
      printf '%s\n' "$FLEET_PIP_VERSION" > /tmp/fleet-pip-version.txt
      "$FLEET_VENV/bin/python" -m pip install --disable-pip-version-check -r /tmp/fleet-pip-version.txt
    fi
    if [ -f /fleet/run/requirements.txt ]; then
      "$FLEET_VENV/bin/python" -m pip install --disable-pip-version-check $FLEET_UPGRADE -r /fleet/run/requirements.txt
    fi
    "$FLEET_VENV/bin/python" -m pip freeze --disable-pip-version-check > "$FLEET_VENV/.fleet-frozen"
    echo pip > "$FLEET_VENV/.fleet-manager"
  fi
  if [ -n "$FLEET_OWNER" ]; then
    "$PY" -c 'import os, sys
uid, gid = (int(x) for x in sys.argv[2].split(":"))
for top, dirs, files in os.walk(sys.argv[1]):
    for name in [top, *(os.path.join(top, n) for n in dirs + files)]:
        os.lchown(name, uid, gid)' "$FLEET_VENV" "$FLEET_OWNER"
  fi
  exit 0
fi
if [ -n "$FLEET_VENV" ]; then
  export VIRTUAL_ENV="$FLEET_VENV" PATH="$FLEET_VENV/bin:$PATH"
fi
exec "$@"
"""


def say(text: str) -> None:
    print(f"[docker] {text}", flush=True)


def requirements_for(task: Task, code_root: Path | None, root_inside: str | None = None) -> Requirements | None:
    """The task's requirements as pip lines; None when there is nothing to install.

    ``root_inside``: where the checkout is inside the container when that is not
    its host path (an image build copies it to ``/fleet/code``); local paths in
    the lines are moved there."""
    requirements = gather(task.requirements, code_root, "pip")
    if requirements is None:
        return None
    if requirements.project is not None:
        say("a poetry project: docker mode installs requirement lines only; skipping the environment")
        return None
    if not requirements.lines:
        return None
    if root_inside is not None and code_root is not None:
        prefix = str(code_root)
        lines = tuple(line.replace(prefix, root_inside) for line in requirements.lines)
        requirements = Requirements(lines=lines, source=requirements.source, cacheable=requirements.cacheable)
    return requirements


def write_run_dir(run_dir: Path, task: Task, config: Config, requirements: Requirements | None) -> None:
    """The files the entry script reads: extra script, setup script, requirements."""
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in run_dir.iterdir():
        stale.unlink()
    (run_dir / "entry.sh").write_text(ENTRY)
    extra = [line for line in config.agent.extra_docker_shell_script if line.strip()]
    if extra:
        (run_dir / "extra.sh").write_text("set -e\n" + "\n".join(extra) + "\n")
    setup = task.script.setup_script or ""
    if setup.strip():
        (run_dir / "setup.sh").write_text(setup if setup.endswith("\n") else setup + "\n")
    if requirements is not None:
        (run_dir / "requirements.txt").write_text("\n".join(requirements.lines) + "\n")
    for path in run_dir.iterdir():  # mounted read-only: readable by whoever the container runs as
        path.chmod(0o644)
    run_dir.chmod(0o755)


def scripts_digest(run_dir: Path) -> dict[str, str]:
    """What of ``run_dir`` decides a built environment: the extra and setup scripts
    run before the build and can install what pip compiles against."""
    out: dict[str, str] = {}
    for name in ("extra.sh", "setup.sh"):
        path = run_dir / name
        out[name] = path.read_text() if path.is_file() else ""
    return out


def build_settings(config: Config) -> dict[str, Any]:
    """What of ``agent.package_manager`` decides an environment built in a container."""
    pm = config.agent.package_manager
    return {
        "manager": "uv" if pm.type == "uv" else "pip",
        "pip_version": list(pm.pip_version),
        "upgrade": pm.force_upgrade,
        "extra_index_url": list(pm.extra_index_url),
    }


def write_build_env(path: Path, config: Config) -> None:
    """``/fleet/build.env`` for ``entry.sh build``: shell assignments, every value quoted."""
    settings = build_settings(config)
    extra = " ".join(settings["extra_index_url"])
    values = {
        "FLEET_MANAGER": settings["manager"],
        # one requirement line per specifier; pip evaluates their markers with the image's Python
        "FLEET_PIP_VERSION": "\n".join(pip_version_spec(spec) for spec in settings["pip_version"]),
        "FLEET_UPGRADE": "--upgrade" if settings["upgrade"] else "",
    }
    lines = [f"{key}={shlex.quote(value)}" for key, value in values.items()]
    lines.append("export UV_LINK_MODE=copy")  # the uv cache is another mount: no hard links
    if extra:
        lines += [f"export PIP_EXTRA_INDEX_URL={shlex.quote(extra)}", f"export UV_EXTRA_INDEX_URL={shlex.quote(extra)}"]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
