"""conda: for hosts that have it (none can be installed here, so this builder
is written against conda's documented command line and its commands are
unit-tested with a recording runner, never run in CI).

``conda create -p PATH python=X.Y -y`` makes the environment with the task's
Python version (conda provides the interpreter; the one fleet resolved only
gives the version).  The requirements are offered to ``conda install`` first
(channels from ``package_manager.conda_channels``); lines conda cannot take
(URLs, markers, ``-e``) and everything after a failed ``conda install`` go
through ``pip`` inside the environment, as ClearML Agent does.  Priority and
post packages use pip.
"""

from __future__ import annotations

import logging
import os
import shutil
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


def conda_binary() -> str | None:
    exe = os.environ.get("CONDA_EXE")
    if exe and os.access(exe, os.X_OK):
        return exe
    return shutil.which("conda")


def conda_spec(line: str) -> str | None:
    """A pip requirement as a conda match spec, or None when conda cannot take it."""
    try:
        req = Requirement(line)
    except InvalidRequirement:
        return None
    if req.url or req.marker is not None or req.extras:
        return None
    return f"{req.name}{req.specifier}"


class CondaBuilder(PipBuilder):
    name = "conda"

    def available(self) -> bool:
        return conda_binary() is not None

    def _conda(self) -> str:
        return conda_binary() or "conda"

    def _channels(self, settings: BuildSettings) -> list[str]:
        return [arg for channel in settings.pm.conda_channels for arg in ("-c", channel)]

    def create(self, path: Path, python: Interpreter, settings: BuildSettings, log: Log) -> None:
        argv = [self._conda(), "create", "-p", str(path), "-y", "--quiet", *self._channels(settings)]
        argv.append(f"python={python.minor}")
        self.run(argv, env=self.tool_env(path, settings), cwd=path.parent, log=log, what="conda create")

    def install(self, path: Path, requirements: Requirements, settings: BuildSettings, log: Log) -> None:
        specs = {line: conda_spec(line) for line in requirements.lines}
        by_conda = [spec for spec in specs.values() if spec is not None]
        by_pip = [line for line, spec in specs.items() if spec is None]
        self.run_phases(path, priority_phases(settings.pm), settings, log)
        if by_conda:
            argv = [self._conda(), "install", "-p", str(path), "-y", "--quiet", *self._channels(settings), *by_conda]
            try:
                self.run(argv, env=self.tool_env(path, settings), cwd=path, log=log, what="conda install")
            except EnvBuildError as exc:
                log.note(f"{exc.message}; installing the requirements with pip instead")
                by_pip = list(requirements.lines)
        if by_pip:
            self._install(path, by_pip, settings, log, "pip install")
        self.run_phases(path, post_phases(settings.pm), settings, log)

    def freeze(self, path: Path, settings: BuildSettings, log: Log) -> list[str]:
        argv = [self._conda(), "list", "-p", str(path), "--export"]
        lines = self.run(argv, env=self.tool_env(path, settings), cwd=path, log=Log(lambda _: None), what="conda list")
        return sorted(line for line in lines if line.strip() and not line.startswith("#"))

    def activation(self, path: Path) -> dict[str, str]:
        return {"CONDA_PREFIX": str(path), "CONDA_DEFAULT_ENV": str(path)}
