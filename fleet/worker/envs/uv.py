"""uv: the default manager, many times faster than pip (PyPI package ``uv``).

The binary comes with the ``uv`` Python package (``uv.find_uv_bin()``), so
nothing is downloaded at run time; uv never fetches a Python either
(``UV_PYTHON_DOWNLOADS=never``): it builds on the interpreter fleet resolved.
Its cache is ``$FLEET_HOME/cache/uv`` (``UV_CACHE_DIR``).  uv does not read
pip's config files, so the primary index configured for pip is passed on
explicitly.  Decision: uv environments have no pip in them (uv's default,
and faster) unless ``package_manager.pip_version`` asks for one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from fleet.worker.envs.builder import (
    BuildSettings,
    Interpreter,
    Log,
    frozen_lines,
    names_torch,
    pip_version_for,
    pip_version_spec,
)
from fleet.worker.envs.pip import PipBuilder, _quiet

log = logging.getLogger(__name__)


def uv_binary() -> str | None:
    try:
        from uv import find_uv_bin
    except ImportError:
        return None
    try:
        return str(find_uv_bin())
    except FileNotFoundError:
        return None


class UvBuilder(PipBuilder):
    name = "uv"

    def available(self) -> bool:
        return uv_binary() is not None

    def _uv(self) -> str:
        found = uv_binary()
        if found is None:  # pragma: no cover - checked through available()
            raise FileNotFoundError("uv is not installed")
        return found

    def tool_env(self, path: Path, settings: BuildSettings) -> dict[str, str]:
        env = dict(settings.env)
        env.pop("VIRTUAL_ENV", None)  # the target is always named with --python
        env["UV_PYTHON_DOWNLOADS"] = "never"
        env["UV_NO_PROGRESS"] = "1"
        if settings.cache_dir is not None:
            env["UV_CACHE_DIR"] = str(settings.cache_dir / "uv")
        return env

    def create(self, path: Path, python: Interpreter, settings: BuildSettings, log: Log) -> None:
        argv = [self._uv(), "venv", "--no-config", "--python", python.executable]
        if settings.pm.system_site_packages:
            argv.append("--system-site-packages")
        if settings.cache_dir is None:
            argv.append("--no-cache")
        self.run([*argv, str(path)], env=self.tool_env(path, settings), cwd=path.parent, log=log, what="uv venv")
        pip_version = pip_version_for(settings.pm.pip_version, python.version)
        if pip_version:
            self._install(path, [pip_version_spec(pip_version)], settings, log, "uv pip install")

    def install_argv(self, path: Path, settings: BuildSettings) -> list[str]:
        argv = [self._uv(), "pip", "install", "--no-config", "--python", str(self.python_of(path))]
        if settings.cache_dir is None:
            argv.append("--no-cache")
        return argv

    def extra_install_args(self, lines: Sequence[str], settings: BuildSettings) -> list[str]:
        """``agent.cuda_version`` picks the PyTorch wheel variant, as ClearML's resolver does."""
        return ["--torch-backend", settings.torch_backend] if settings.torch_backend and names_torch(lines) else []

    def freeze(self, path: Path, settings: BuildSettings, log: Log) -> list[str]:
        argv = [self._uv(), "pip", "freeze", "--no-config", "--python", str(self.python_of(path))]
        lines = self.run(argv, env=self.tool_env(path, settings), cwd=path, log=_quiet(log), what="uv pip freeze")
        return frozen_lines(lines)
