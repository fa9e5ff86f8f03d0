"""What every command needs: the config, the home, a client for the manager."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fleet.cli.client import Client, Endpoint, manager_url
from fleet.cli.client_config import ClientSettings, client_settings
from fleet.core.errors import EXIT_USAGE, FleetError, ManagerUnavailable, UsageError
from fleet.core.home import Home, resolve_home

if TYPE_CHECKING:
    from fleet.core.config import Config

MANAGER_START_TIMEOUT_S = 30.0


@dataclass
class Context:
    config_path: str | None = None
    _config: Config | None = field(default=None, repr=False)
    _settings: ClientSettings | None = field(default=None, repr=False)
    _client: Client | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        """The whole configuration (parsed): for the commands that act here."""
        if self._config is None:
            from fleet.core.config import load_config  # the schema and HOCON parser: not for a client command

            self._config = load_config(self.config_path)
        return self._config

    @property
    def settings(self) -> ClientSettings:
        """What a client needs of the configuration, cheaply (fleet/cli/client_config.py)."""
        if self._settings is None:
            if self._config is not None:
                config = self._config
                self._settings = ClientSettings(config.fleet.home, config.fleet.api.token, config.path)
            else:
                self._settings = client_settings(self.config_path)
        return self._settings

    @property
    def home(self) -> Home:
        return Home(resolve_home(self.settings.home))

    def running(self) -> Endpoint | None:
        return manager_url(self.home)

    def client(self) -> Client:
        if self._client is None:
            found = self.running()
            if found is None:
                raise ManagerUnavailable(
                    f"no manager is running for FLEET_HOME={self.home.root}; start one with: fleetctl up --queue NAME"
                )
            # Over the socket the kernel says who we are: only an explicit token is sent (and
            # checked); over TCP the token file is the credential of the manager's user.
            token = self.settings.token
            if found.uds is None and not token:
                token = self.home.read_api_token()
            self._client = Client(found.url, token, uds=found.uds)
        return self._client

    def start_manager(self, port: int | None, log_level: int | None = None) -> int:
        """Start a detached manager for this home and wait until it answers."""
        import subprocess  # only `up` starts a process

        home = self.home.ensure()
        argv = [sys.executable, "-m", "fleet.cli"]
        if self.config.path is not None:
            argv += ["--config", str(self.config.path)]
        argv += ["manager", "--home", str(home.root)]
        if port is not None:
            argv += ["--port", str(port)]
        if log_level is not None and log_level != 20:  # logging.INFO, the manager's default
            argv += ["--log-level", str(log_level)]
        with open(home.manager_log, "ab") as log:
            child = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + MANAGER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if child.poll() is not None:
                last = _tail(home.manager_log, 1).removeprefix("fleetctl: ")
                if child.returncode == EXIT_USAGE:
                    raise UsageError(last)
                raise FleetError(f"the manager did not start: {last} (see {home.manager_log})")
            info = home.read_manager_info()
            if info and info.get("pid") == child.pid:
                try:
                    Client(str(info["url"]), timeout=2).get("/health")
                    return child.pid
                except FleetError:
                    pass
            time.sleep(0.02)
        child.terminate()
        raise FleetError(f"the manager did not answer within {MANAGER_START_TIMEOUT_S:g}s; see {home.manager_log}")


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"
