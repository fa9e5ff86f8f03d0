"""The two config keys a client command needs, read cheaply.

A command that only talks to the manager needs ``fleet.core.home`` (to find the
manager) and ``fleet.api.token``.  Parsing HOCON costs pyhocon's import, tens
of milliseconds on every command, so the first command that reads a config
file keeps those two values in ``$XDG_CACHE_HOME/fleet/`` (default
``~/.cache/fleet/``; folder 0700, file 0600: the token is a secret, like the
file it came from), with a SHA-256 of the file's bytes; later commands read the
cache while the digest matches.  Not cached, so always parsed as before: a
file that includes others or substitutes ``${...}`` (its meaning depends on
more than its bytes) and a file whose parse warns (an unknown key warns on
every command, as it always did).  A file that does not parse fails the
command with its message, whether or not an older version was cached.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fleet.core.config_file import default_config_path

CACHE_VERSION = 1


@dataclass(frozen=True)
class ClientSettings:
    home: str = ""  # fleet.home ("" = FLEET_HOME, else ~/.fleet)
    token: str = ""  # fleet.api.token, FLEET_API_TOKEN applied
    path: Path | None = None  # the config file, None for built-in defaults


def client_settings(config_path: str | None, env: Mapping[str, str] | None = None) -> ClientSettings:
    """``fleet.core.home`` and ``fleet.api.token`` of the config fleetctl would load."""
    env = os.environ if env is None else env
    source = Path(config_path).expanduser() if config_path is not None else default_config_path(env)
    home, token = "", ""
    if source is not None:
        home, token = _file_settings(source, env)
    return ClientSettings(home=home, token=env.get("FLEET_API_TOKEN") or token, path=source)


def _file_settings(source: Path, env: Mapping[str, str]) -> tuple[str, str]:
    try:
        data = source.read_bytes()
    except OSError:
        data = None  # load_config says what is wrong with it
    if data is None or b"include" in data or b"${" in data:
        return _parse(source)
    digest = hashlib.sha256(data).hexdigest()
    cache = _cache_file(source)
    cached = _read_cache(cache, digest)
    if cached is not None:
        return cached
    home, token, warned = _parse_noting_warnings(source)
    if not warned:
        _write_cache(cache, {"version": CACHE_VERSION, "sha256": digest, "home": home, "token": token})
    return home, token


def _parse(source: Path) -> tuple[str, str]:
    """The file's own values (no environment overrides), parsed by :func:`fleet.core.config.load_config`."""
    from fleet.core.config import load_config  # the schema and HOCON parser: only on a cache miss

    config = load_config(source, env={})
    return config.fleet.home, config.fleet.api.token


def _parse_noting_warnings(source: Path) -> tuple[str, str, bool]:
    """:func:`_parse`, and whether it warned (the warnings still reach stderr as before)."""
    import logging

    warnings: list[logging.LogRecord] = []

    def note(record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            warnings.append(record)
        return True

    logger = logging.getLogger("fleet.core.config")
    logger.addFilter(note)
    try:
        home, token = _parse(source)
    finally:
        logger.removeFilter(note)
    return home, token, bool(warnings)


def _cache_file(source: Path) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fleet"
    name = hashlib.sha256(str(source.absolute()).encode()).hexdigest()[:32]
    return root / f"config-{name}.json"


def _read_cache(cache: Path, digest: str) -> tuple[str, str] | None:
    try:
        entry = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("version") != CACHE_VERSION or entry.get("sha256") != digest:
        return None
    home, token = entry.get("home"), entry.get("token")
    return (home, token) if isinstance(home, str) and isinstance(token, str) else None


def _write_cache(cache: Path, entry: dict[str, object]) -> None:
    """Best effort: a home that cannot be written only costs the parse next time."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(entry, fh)
        os.replace(tmp, cache)
    except OSError:
        pass
