"""Resolve the configuration into what one build needs: folders, index, tool env.

Folders: the venv cache is ``venvs_cache.path`` or ``$FLEET_HOME/venvs-cache``;
one-off builds go to ``venvs_dir`` (its built-in default ``~/.fleet/venvs-builds``
means ``$FLEET_HOME/venvs-builds``); the download caches live in
``$FLEET_HOME/cache/{pip,uv,poetry}`` (``pip_download_cache.path`` moves that
folder, ``enabled: false`` turns them off).

The tools run with the environment the task was started with, minus the
task's own variables unless ``agent.enable_task_env`` is true, and minus
variables that would make the tools look at another Python.  When task
variables reach the tools, those that steer installers (``PIP_*``, ``UV_*``,
``POETRY_*``, ``CONDA_*``) are part of the cache key, so a task cannot change
what a shared cached environment holds.
"""

from __future__ import annotations

import configparser
import hashlib
from collections.abc import Mapping
from pathlib import Path

from fleet.core.config import AgentConfig, Config
from fleet.core.home import Home
from fleet.worker.envs.builder import BuildSettings, torch_backend

KEEP = frozenset({"PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR"})
DROP = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "CONDA_PREFIX", "PIP_REQUIRE_VIRTUALENV")
INSTALLER_PREFIXES = ("PIP_", "UV_", "POETRY_", "CONDA_")


def cache_root(home: Home, agent: AgentConfig) -> Path:
    return Path(agent.venvs_cache.path).expanduser() if agent.venvs_cache.path else home.root / "venvs-cache"


def builds_dir(home: Home, agent: AgentConfig) -> Path:
    if agent.venvs_dir == AgentConfig().venvs_dir:
        return home.root / "venvs-builds"
    return Path(agent.venvs_dir).expanduser()


def downloads_dir(home: Home, agent: AgentConfig) -> Path | None:
    if not agent.pip_download_cache.enabled:
        return None
    return Path(agent.pip_download_cache.path).expanduser() if agent.pip_download_cache.path else home.root / "cache"


def pip_index_url(env: Mapping[str, str]) -> str:
    """The primary index pip is configured with, or "" for pip's default.

    uv and poetry do not read pip's files, so fleet reads them for them:
    ``PIP_INDEX_URL``, else ``index-url`` in the files pip reads (the last wins)."""
    if env.get("PIP_INDEX_URL"):
        return env["PIP_INDEX_URL"].split()[0]
    home = Path(env.get("HOME") or "~").expanduser()
    xdg_dirs = (env.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":")
    files = [Path(d) / "pip" / "pip.conf" for d in xdg_dirs] + [Path("/etc/pip.conf")]
    files += [home / ".pip" / "pip.conf", Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "pip" / "pip.conf"]
    if env.get("PIP_CONFIG_FILE"):
        files.append(Path(env["PIP_CONFIG_FILE"]))
    found = ""
    for path in files:
        parser = configparser.RawConfigParser()
        try:
            parser.read(path)
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        for section in ("global", "install"):
            if parser.has_option(section, "index-url"):
                found = parser.get(section, "index-url").split()[0]
    return found


def tool_environment(env: Mapping[str, str], task_env: Mapping[str, str], enable_task_env: bool) -> dict[str, str]:
    out = dict(env)
    if not enable_task_env:
        for name, value in task_env.items():
            if name not in KEEP and out.get(name) == value:
                del out[name]
    for name in DROP:
        out.pop(name, None)
    out.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return out


def installer_env_digest(task_env: Mapping[str, str], enable_task_env: bool) -> str:
    """Hash of the task's installer variables that reach the tools ("" when none do)."""
    if not enable_task_env:
        return ""
    steering = sorted((k, v) for k, v in task_env.items() if k.startswith(INSTALLER_PREFIXES))
    return hashlib.sha256(repr(steering).encode()).hexdigest() if steering else ""


def build_settings(home: Home, config: Config, env: Mapping[str, str], task_env: Mapping[str, str]) -> BuildSettings:
    agent = config.agent
    tools = tool_environment(env, task_env, agent.enable_task_env)
    return BuildSettings(
        pm=agent.package_manager,
        env=tools,
        cache_dir=downloads_dir(home, agent),
        index_url=pip_index_url(tools),
        extra_index_urls=agent.package_manager.extra_index_url,
        torch_backend=torch_backend(agent.cuda_version) if agent.cuda_version else "",
    )
