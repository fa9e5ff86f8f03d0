"""Load and validate fleet's configuration.

The file is HOCON (pyhocon).  Its ``agent { ... }`` section uses ClearML Agent's
key names so that an existing ``clearml.conf`` loads unchanged; ``fleet { ... }``
holds what is ours.  Other top-level sections (``api``, ``sdk`` ...) are ignored;
unknown keys inside ``agent`` / ``fleet`` warn; a value of the wrong type fails
with its key path and the expected type.

The schema is the dataclasses below: each field's type picks its converter
(:data:`_BY_TYPE`), and :data:`_BY_PATH` narrows some keys further.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar, get_type_hints
from urllib.parse import urlsplit

from fleet.core import convert as cv
from fleet.core.config_file import default_config_path as default_config_path
from fleet.core.errors import ConfigError
from fleet.core.secrets import MASK, mask_urls

log = logging.getLogger(__name__)

PACKAGE_MANAGERS = ("pip", "uv", "conda", "poetry")
SECRET_KEYS = frozenset({"agent.git_pass", "fleet.api.token", "fleet.api.secret_key"})


@dataclass(frozen=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str = field(default="", repr=False)
    # ClearML-style credentials: with both set, the ClearML-compatible routes
    # also accept HTTP basic auth ``access_key:secret_key`` (curl --user).
    access_key: str = ""
    secret_key: str = field(default="", repr=False)
    max_body_mb: float = 2.0  # larger request bodies are refused with 413 (fleet.api.bounds)
    # The OS group whose members may use this manager (through its unix socket, or by
    # reading the token file); "" = only the manager's own user (and root).
    group: str = ""


@dataclass(frozen=True)
class MetricsConfig:
    interval: float = 5.0
    raw_retention_hours: float = 24.0
    rollup_retention_days: float = 30.0


@dataclass(frozen=True)
class StoreConfig:
    # "" = SQLite in FLEET_HOME (one host, nothing to install); a store shared by many
    # hosts: postgresql://user[:password]@host[:port]/database[?sslmode=...] (pip install
    # 'fleet[postgres]').  Env FLEET_STORE_URL.  Never shown unmasked (fleet.core.secrets).
    url: str = field(default="", repr=False)


@dataclass(frozen=True)
class FleetSection:
    home: str = ""  # "" = FLEET_HOME, else ~/.fleet (resolved where used)
    api: ApiConfig = field(default_factory=ApiConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    stop_grace_seconds: float = 10.0  # SIGTERM -> SIGKILL grace for tasks
    handover_seconds: float = 30.0  # workers without a manager this long stop themselves
    remote_lease_seconds: float = 60.0  # a remote executor's task fails after this long without word
    host_lease_seconds: float = 30.0  # a host whose manager has not renewed its lease this long is lost
    log_max_mb: float = 1024.0
    timezone: str = ""
    poll_interval: float = 2.0  # fallback poll of idle workers
    cgroups: bool = True  # each task in its own cgroup v2 where fleet may create one (fleet.contain)
    # With a manager running as root: a task runs as the OS user who submitted it.
    run_as_submitter: bool = False


@dataclass(frozen=True)
class PackageManagerConfig:
    type: str = "uv"
    # A specifier ("<20.2"), or specifiers with PEP 508 markers of which the first
    # matching the environment's Python applies (fleet.worker.envs.builder.pip_version_for).
    pip_version: tuple[str, ...] = ()
    system_site_packages: bool = False
    force_upgrade: bool = False
    extra_index_url: tuple[str, ...] = ()
    conda_channels: tuple[str, ...] = ("pytorch", "conda-forge", "defaults")
    priority_packages: tuple[str, ...] = ()
    priority_optional_packages: tuple[str, ...] = ()
    post_packages: tuple[str, ...] = ()
    post_optional_packages: tuple[str, ...] = ()
    # ClearML keys accepted and not applicable here (README, "Coming from ClearML Agent").
    poetry_version: str = ""
    poetry_install_extra_args: tuple[str, ...] = ()
    extra_pip_install_flags: tuple[str, ...] = ()
    pytorch_resolve: str = "pip"
    conda_full_env_update: bool = False
    conda_env_as_base_docker: bool = False
    use_conda_base_env: bool = False
    torch_nightly: bool = False
    force_repo_requirements_txt: bool = False


@dataclass(frozen=True)
class VenvsCacheConfig:
    max_entries: int = 10
    free_space_threshold_gb: float = 2.0  # 0 or negative disables the check
    path: str = ""


@dataclass(frozen=True)
class VcsCacheConfig:
    enabled: bool = True
    path: str = ""
    clone_on_pull_fail: bool = False  # not applicable: fleet never pulls, it fetches a commit into a bare mirror


@dataclass(frozen=True)
class VenvUpdateConfig:
    enabled: bool = False  # deprecated in ClearML (use venvs_cache); not applicable


@dataclass(frozen=True)
class PipDownloadCacheConfig:
    enabled: bool = True
    path: str = ""


@dataclass(frozen=True)
class DefaultDockerConfig:
    image: str = ""
    arguments: tuple[str, ...] = ()
    match_rules: tuple[Any, ...] = field(default=(), hash=False)  # ClearML Enterprise only; not applicable


@dataclass(frozen=True)
class HideDockerEnvConfig:
    enabled: bool = True
    extra_keys: tuple[str, ...] = ()
    parse_embedded_urls: bool = True  # passwords inside URLs are always masked


def _empty_map() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class AgentConfig:
    worker_id: str = ""
    worker_name: str = ""
    python_binary: str = ""
    package_manager: PackageManagerConfig = field(default_factory=PackageManagerConfig)
    venvs_dir: str = "~/.fleet/venvs-builds"
    venvs_cache: VenvsCacheConfig = field(default_factory=VenvsCacheConfig)
    vcs_cache: VcsCacheConfig = field(default_factory=VcsCacheConfig)
    pip_download_cache: PipDownloadCacheConfig = field(default_factory=PipDownloadCacheConfig)
    git_user: str = ""
    git_pass: str = field(default="", repr=False)
    git_host: str = ""
    force_git_ssh_protocol: bool = False
    force_git_ssh_port: int = 0
    force_git_ssh_user: str = ""
    translate_ssh: bool = True
    default_docker: DefaultDockerConfig = field(default_factory=DefaultDockerConfig)
    extra_docker_arguments: tuple[str, ...] = ()
    extra_docker_shell_script: tuple[str, ...] = ()
    docker_force_pull: bool = False
    docker_container_name_format: str = "fleet-id-{task_id}-{rand_string:.8}"
    hide_docker_command_env_vars: HideDockerEnvConfig = field(default_factory=HideDockerEnvConfig)
    docker_internal_mounts: Mapping[str, str] = field(default_factory=_empty_map, hash=False)
    enable_task_env: bool = False
    uptime: tuple[str, ...] = ()
    downtime: tuple[str, ...] = ()
    cuda_version: str = ""
    cudnn_version: str = ""
    gpu_busy_memory_mb: int = 1024
    docker_pip_cache: str = ""  # host folder for pip's cache in containers; "" = $FLEET_HOME/cache/pip
    docker_apt_cache: str = ""  # host folder mounted at docker_internal_mounts.apt_cache; "" = none
    # ClearML keys accepted and not applicable here (README, "Coming from ClearML Agent").
    ignore_requested_python_version: bool = False
    force_git_root_python_path: bool = False
    enable_git_ask_pass: bool = True
    docker_use_activated_venv: bool = True
    disable_ssh_mount: bool = False
    reload_config: bool = False
    venv_update: VenvUpdateConfig = field(default_factory=VenvUpdateConfig)
    docker_args_extra_precedes_task: bool = True
    protected_docker_extra_args: tuple[str, ...] = ()
    docker_install_opencv_libs: bool = True
    docker_allow_host_environ: bool = False
    docker_init_bash_script: tuple[str, ...] = ()
    docker_preprocess_bash_script: tuple[str, ...] = ()
    suppress_carriage_return: bool = True


@dataclass(frozen=True)
class Config:
    agent: AgentConfig = field(default_factory=AgentConfig)
    fleet: FleetSection = field(default_factory=FleetSection)
    path: Path | None = None  # the file it came from; None for built-in defaults


STORE_SCHEMES = ("postgresql", "postgres")
_URL_SECRET_PARAM = re.compile(r"((?:^|[?&])(?:ssl)?password=)[^&]*", re.IGNORECASE)


def store_url(value: Any) -> str:
    """``fleet.store.url``: empty (SQLite in the home) or a PostgreSQL URL."""
    text = cv.to_str(value).strip()
    if not text:
        return ""
    expected = "expected empty (SQLite in FLEET_HOME) or postgresql://[user[:password]@]host[:port]/database"
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        raise ValueError(f"{expected} (the port is not a number)") from None
    if parts.scheme not in STORE_SCHEMES or not (parts.hostname or parts.path.strip("/") or parts.query):
        raise ValueError(expected)
    return text


def masked_url(text: str) -> str:
    """A store URL as people see it: its password and secret parameters masked."""
    return _URL_SECRET_PARAM.sub(lambda m: m.group(1) + MASK, mask_urls(text))


_BY_TYPE: Mapping[Any, cv.Converter[Any]] = {
    bool: cv.to_bool,
    int: cv.to_int,
    float: cv.to_float,
    str: cv.to_str,
    tuple[str, ...]: cv.to_str_tuple,
    Mapping[str, str]: cv.to_str_map,
    tuple[Any, ...]: cv.to_plain_tuple,
}

_BY_PATH: Mapping[str, cv.Converter[Any]] = {
    "agent.package_manager.type": cv.one_of(*PACKAGE_MANAGERS),
    "agent.package_manager.pip_version": cv.requirement_specs,
    "agent.force_git_ssh_port": cv.int_between(0, 65535),
    "agent.venvs_cache.max_entries": cv.int_at_least(0),
    "agent.gpu_busy_memory_mb": cv.int_at_least(0),
    "fleet.api.port": cv.int_between(0, 65535),
    "fleet.store.url": store_url,
    "fleet.api.max_body_mb": cv.number_in(0, 1024),
    "fleet.stop_grace_seconds": cv.number_at_least(0),
    "fleet.handover_seconds": cv.number_at_least(0),
    "fleet.remote_lease_seconds": cv.number_at_least(1),
    "fleet.host_lease_seconds": cv.number_in(1, 86400),
    "fleet.log_max_mb": cv.number_above(0),
    "fleet.poll_interval": cv.number_above(0),
    "fleet.metrics.interval": cv.number_above(0),
    "fleet.metrics.raw_retention_hours": cv.number_above(0),
    "fleet.metrics.rollup_retention_days": cv.number_above(0),
}

T = TypeVar("T")


def _hocon() -> tuple[Any, tuple[type[Exception], ...]]:
    """pyhocon's parser and its syntax errors, imported when a file is read:
    pyhocon (with pyparsing) takes tens of milliseconds to import, and a
    client command (fleet/cli/client_config.py) mostly reads a cached summary."""
    from pyhocon import ConfigFactory  # type: ignore[import-untyped, unused-ignore]
    from pyhocon.exceptions import ConfigException  # type: ignore[import-untyped, unused-ignore]
    from pyparsing import ParseBaseException

    return ConfigFactory, (ConfigException, ParseBaseException)


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load the configuration from ``path`` (or the default source) and the environment."""
    env = os.environ if env is None else env
    source = Path(path).expanduser() if path is not None else default_config_path(env)
    if source is None:
        log.debug("no config file; using built-in defaults")
        return _apply_env(Config(), env)
    if not source.is_file():
        raise ConfigError(f"config file {source} does not exist or is not a file")
    parser, bad_syntax = _hocon()
    try:
        tree = parser.parse_file(str(source))
    except bad_syntax as exc:
        message = " ".join(str(exc).split())
        raise ConfigError(f"{source}: cannot parse config: {message}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read config: {exc}") from None
    log.info("config: read %s", source)
    return _apply_env(_from_tree(tree, source), env)


def parse_config_string(text: str, path: Path | None = None) -> Config:
    """Validate HOCON text the way :func:`load_config` does (no environment overrides)."""
    parser, bad_syntax = _hocon()
    try:
        tree = parser.parse_string(text)
    except bad_syntax as exc:
        raise ConfigError(f"cannot parse config: {' '.join(str(exc).split())}") from None
    return _from_tree(tree, path)


def config_from_plain(tree: Mapping[str, Any], source: Path | None = None) -> Config:
    """A config from plain JSON-like data (a config another process already
    loaded, e.g. the worker's, handed to its preparing step), validated as a
    file is; no environment overrides (they were applied where it was loaded)."""
    return _from_tree(tree, source)


def _from_tree(tree: Any, source: Path | None) -> Config:
    where = f"{source}: " if source is not None else ""
    if not isinstance(tree, Mapping):
        raise ConfigError(f"{where}config: expected an object at the top level, got a list")
    agent = _build(AgentConfig, tree.get("agent", None), "agent", where)
    fleet = _build(FleetSection, tree.get("fleet", None), "fleet", where)
    if agent.uptime and agent.downtime:
        raise ConfigError(
            f"{where}config: set only one of agent.uptime / agent.downtime",
            field="agent.uptime",
        )
    return Config(agent=agent, fleet=fleet, path=source)


def _build(cls: type[T], raw: Any, prefix: str, where: str) -> T:
    """Make dataclass ``cls`` from the HOCON object ``raw`` found at ``prefix``."""
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise _bad_value(where, prefix, "expected an object", raw)
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}"
        if key not in known:
            log.warning("config %s: unknown key, ignored", path)
        elif value is None:
            continue  # HOCON null: keep the default
        elif is_dataclass(hints[key]):
            values[key] = _build(hints[key], value, path, where)
        else:
            convert = _BY_PATH.get(path, _BY_TYPE[hints[key]])
            try:
                values[key] = convert(value)
            except ValueError as exc:
                raise _bad_value(where, path, str(exc), value) from None
    return cls(**values)


def _bad_value(where: str, path: str, expected: str, value: Any) -> ConfigError:
    if path in SECRET_KEYS:
        shown = "'********'"
    elif path == "fleet.store.url":
        shown = repr(masked_url(str(value)))
    else:
        shown = repr(_plain(value))
    return ConfigError(f"{where}config {path}: {expected}, got {shown}", field=path)


def _plain(value: Any) -> Any:
    """pyhocon's ConfigTree as a plain dict, for readable messages."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _apply_env(config: Config, env: Mapping[str, str]) -> Config:
    """Environment overrides; the first non-empty variable of each list wins."""

    def pick(names: tuple[str, ...], current: str) -> str:
        return next((env[name] for name in names if env.get(name)), current)

    agent, api = config.agent, config.fleet.api
    agent = replace(
        agent,
        worker_id=pick(("FLEET_WORKER_ID", "CLEARML_WORKER_ID"), agent.worker_id),
        worker_name=pick(("FLEET_WORKER_NAME", "CLEARML_WORKER_NAME"), agent.worker_name),
    )
    api = replace(api, token=pick(("FLEET_API_TOKEN",), api.token))
    store = config.fleet.store
    if env.get("FLEET_STORE_URL"):
        try:
            store = replace(store, url=store_url(env["FLEET_STORE_URL"]))
        except ValueError as exc:
            shown = masked_url(env["FLEET_STORE_URL"])
            raise ConfigError(
                f"FLEET_STORE_URL (fleet.store.url): {exc}, got {shown!r}", field="fleet.store.url"
            ) from None
    return replace(config, agent=agent, fleet=replace(config.fleet, api=api, store=store))


_BARE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


def config_to_hocon(config: Config, header: str = "") -> str:
    """Render ``config`` as HOCON with ``agent { }`` and ``fleet { }`` sections.

    Every key is written; strings are JSON-quoted, which HOCON reads back
    verbatim (``$``, ``#``, ``"`` and ``\\`` included).
    """
    lines = [f"# {line}" for line in header.splitlines()]
    for name in ("agent", "fleet"):
        lines.append(f"{name} {{")
        lines.extend(_render(getattr(config, name), "  "))
        lines.append("}")
    return "\n".join(lines) + "\n"


def _render(obj: Any, indent: str) -> list[str]:
    lines: list[str] = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            lines.append(f"{indent}{f.name} {{")
            lines.extend(_render(value, indent + "  "))
            lines.append(f"{indent}}}")
        else:
            lines.append(f"{indent}{f.name}: {_hocon_value(value)}")
    return lines


def _hocon_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple):
        return "[" + ", ".join(_hocon_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = (f"{k if _BARE_KEY.match(k) else json.dumps(k)}: {_hocon_value(v)}" for k, v in value.items())
        return "{ " + ", ".join(items) + " }" if value else "{}"
    raise TypeError(f"cannot render {type(value).__name__} as HOCON")
