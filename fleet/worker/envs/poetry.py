"""poetry: install a project's dependencies (pyproject.toml + poetry.lock).

Two cases.  A repository with its own ``pyproject.toml`` (and usually
``poetry.lock``): both files are copied into the environment's folder and
``poetry install --no-root`` runs there, so the environment depends only on
those files (their hash is in the cache key) and never on the checkout; the
task runs from its checkout, so its own package is importable from there.
A plain list of packages: a ``package-mode = false`` project is written
with them (``[tool.poetry.dependencies]``, which Poetry 1.8 and 2.x read) and
one ``[[tool.poetry.source]]`` with ``priority = "primary"`` on the simple
index pip uses: some registries (this host's included) have no per-version
JSON API, which Poetry's built-in PyPI source needs.

The environment itself is a ``python -m venv``; Poetry installs into it
because ``VIRTUAL_ENV`` names it.  Poetry's cache is ``$FLEET_HOME/cache/poetry``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from fleet.worker.envs.builder import (
    BuildSettings,
    EnvBuildError,
    Interpreter,
    Log,
    Requirements,
    post_phases,
    priority_phases,
)
from fleet.worker.envs.pip import PipBuilder

log = logging.getLogger(__name__)

PROJECT_DIR = "fleet-poetry"
DEFAULT_INDEX = "https://pypi.org/simple"


def poetry_binary() -> str | None:
    """``poetry`` next to fleet's interpreter (installed with fleet), else on PATH."""
    beside = Path(sys.executable).parent / "poetry"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("poetry")


def _toml(value: object) -> str:
    return json.dumps(value)  # a JSON string or list is valid TOML


def dependency_table(lines: list[str]) -> list[str]:
    """PEP 508 lines as ``[tool.poetry.dependencies]`` entries."""
    out = []
    for line in lines:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            raise EnvBuildError(f"poetry cannot install {line!r}: not a package requirement") from None
        spec: dict[str, object] = {"version": str(req.specifier) or "*"}
        if req.url:
            spec = {"url": req.url}
        if req.extras:
            spec["extras"] = sorted(req.extras)
        if req.marker is not None:
            spec["markers"] = str(req.marker)
        items = ", ".join(f"{k} = {_toml(v)}" for k, v in spec.items())
        out.append(f"{_toml(req.name)} = {{ {items} }}")
    return out


def generated_project(lines: list[str], python: Interpreter, settings: BuildSettings) -> str:
    major, minor = (int(p) for p in python.minor.split("."))
    text = [
        "[tool.poetry]",
        'name = "fleet-task-env"',
        'version = "0.0.0"',
        'description = "Built by fleet"',
        "authors = []",
        "package-mode = false",
        "",
        "[tool.poetry.dependencies]",
        f'python = ">={major}.{minor},<{major}.{minor + 1}"',
        *dependency_table(lines),
        "",
        "[[tool.poetry.source]]",
        'name = "fleet-index"',
        f"url = {_toml(settings.index_url or DEFAULT_INDEX)}",
        'priority = "primary"',
    ]
    for n, url in enumerate(settings.extra_index_urls, 1):
        text += ["", "[[tool.poetry.source]]", f'name = "fleet-extra-{n}"', f"url = {_toml(url)}"]
        text.append('priority = "supplemental"')
    return "\n".join(text) + "\n"


class PoetryBuilder(PipBuilder):
    name = "poetry"

    def available(self) -> bool:
        return poetry_binary() is not None

    def tool_env(self, path: Path, settings: BuildSettings) -> dict[str, str]:
        env = super().tool_env(path, settings)
        env.update(
            VIRTUAL_ENV=str(path),
            PATH=f"{self.bin_dir(path)}{os.pathsep}{env.get('PATH', '')}",
            POETRY_NO_INTERACTION="1",
            POETRY_VIRTUALENVS_CREATE="false",
            PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",  # never wait on a desktop keyring
        )
        if settings.cache_dir is not None:
            env["POETRY_CACHE_DIR"] = str(settings.cache_dir / "poetry")
        return env

    def install(self, path: Path, requirements: Requirements, settings: BuildSettings, log: Log) -> None:
        binary = poetry_binary()
        if binary is None:
            raise EnvBuildError("poetry install failed: poetry is not installed")
        project = path / PROJECT_DIR
        project.mkdir()
        if requirements.project is not None:
            for name in ("pyproject.toml", "poetry.lock"):
                if (requirements.project / name).is_file():
                    shutil.copy2(requirements.project / name, project / name)
        else:
            python = Interpreter(str(self.python_of(path)), venv_version(path))
            (project / "pyproject.toml").write_text(generated_project(list(requirements.lines), python, settings))
        # priority / post packages go through pip around poetry's own install
        self.run_phases(path, priority_phases(settings.pm), settings, log)
        env = self.tool_env(path, settings)
        self.run(
            [binary, "install", "--no-root", "--no-interaction"], env=env, cwd=project, log=log, what="poetry install"
        )
        self.run_phases(path, post_phases(settings.pm), settings, log)


def venv_version(path: Path) -> str:
    """The Python version a venv was made with, from its ``pyvenv.cfg``."""
    for line in (path / "pyvenv.cfg").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            return value.strip()
    raise EnvBuildError(f"{path}: pyvenv.cfg names no Python version")
