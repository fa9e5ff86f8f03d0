"""pip: ``python -m venv`` + ``pip install`` (ClearML's default mode).

Also the base of the uv builder: both install the same phases (priority,
requirements, post; optional packages one by one, a failure only noted) with
the same options (``--upgrade`` for ``force_upgrade``, the configured
indexes).  The download cache is ``PIP_CACHE_DIR`` under FLEET_HOME.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from fleet.worker.envs.builder import (
    BuildSettings,
    EnvBuilder,
    EnvBuildError,
    Interpreter,
    Log,
    Phase,
    Requirements,
    frozen_lines,
    install_phases,
    pip_version_for,
    pip_version_spec,
)

log = logging.getLogger(__name__)

REQUIREMENTS_FILE = "fleet-requirements.txt"


class PipBuilder(EnvBuilder):
    name = "pip"

    def available(self) -> bool:
        return True  # venv and ensurepip ship with Python (Debian: python3-venv)

    def create(self, path: Path, python: Interpreter, settings: BuildSettings, log: Log) -> None:
        argv = [python.executable, "-m", "venv"]
        if settings.pm.system_site_packages:
            argv.append("--system-site-packages")
        self.run([*argv, str(path)], env=settings.env, cwd=path.parent, log=log, what="python -m venv")
        pip_version = pip_version_for(settings.pm.pip_version, python.version)
        if pip_version:
            self._install(path, [pip_version_spec(pip_version)], settings, log, "pip install")

    # -- what uv overrides -----------------------------------------------------
    def install_argv(self, path: Path, settings: BuildSettings) -> list[str]:
        argv = [str(self.python_of(path)), "-m", "pip", "install", "--no-input", "--disable-pip-version-check"]
        if settings.cache_dir is None:
            argv.append("--no-cache-dir")
        return argv

    def extra_install_args(self, lines: Sequence[str], settings: BuildSettings) -> list[str]:
        """Options for one install of ``lines`` (pip has none; uv picks the PyTorch wheel variant)."""
        return []

    def tool_env(self, path: Path, settings: BuildSettings) -> dict[str, str]:
        env = dict(settings.env)
        if settings.cache_dir is not None:
            env["PIP_CACHE_DIR"] = str(settings.cache_dir / "pip")
        return env

    # -- shared ----------------------------------------------------------------
    def install(self, path: Path, requirements: Requirements, settings: BuildSettings, log: Log) -> None:
        self.run_phases(path, install_phases(requirements.lines, settings.pm), settings, log)

    def run_phases(self, path: Path, phases: list[Phase], settings: BuildSettings, log: Log) -> None:
        """Install phase after phase; a failed optional package is only noted."""
        for label, lines, optional in phases:
            what = f"{self.name} install" if label == "requirements" else f"{self.name} install of {label}"
            try:
                self._install(path, lines, settings, log, what)
            except EnvBuildError as exc:
                if not optional:
                    raise
                log.note(f"{label} {lines[0]} skipped: {exc.message}")

    def _install(self, path: Path, lines: Sequence[str], settings: BuildSettings, log: Log, what: str) -> None:
        argv = self.install_argv(path, settings)
        if settings.pm.force_upgrade:
            argv.append("--upgrade")
        if settings.index_url:
            argv += ["--index-url", settings.index_url]
        for url in settings.extra_index_urls:
            argv += ["--extra-index-url", url]
        argv += self.extra_install_args(lines, settings)
        req_file = path / REQUIREMENTS_FILE
        req_file.write_text("".join(f"{line}\n" for line in lines))
        argv += ["-r", str(req_file)]
        self.run(argv, env=self.tool_env(path, settings), cwd=path, log=log, what=what)

    def freeze(self, path: Path, settings: BuildSettings, log: Log) -> list[str]:
        argv = [str(self.python_of(path)), "-m", "pip", "freeze", "--disable-pip-version-check"]
        lines = self.run(argv, env=self.tool_env(path, settings), cwd=path, log=_quiet(log), what="pip freeze")
        return frozen_lines(lines)


def _quiet(log: Log) -> Log:
    """A log that drops the tool's lines (a freeze is recorded on the task, not printed)."""
    return Log(lambda text: log.write(text) if text.startswith("[prepare]") else None)
