"""Which configuration file fleet reads (the light part of :mod:`fleet.core.config`).

``fleetctl``'s client commands find the file here without importing the
schema and its parser (see fleet/cli/client_config.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def default_config_path(env: Mapping[str, str] | None = None) -> Path | None:
    """``FLEET_CONFIG_FILE`` if set, else ``~/fleet.conf`` if it exists, else
    ``CLEARML_CONFIG_FILE`` if set, else ``~/clearml.conf`` if it exists, else None
    (a ClearML Agent host's own file works unchanged)."""
    env = os.environ if env is None else env
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    if env.get("FLEET_CONFIG_FILE"):
        return Path(env["FLEET_CONFIG_FILE"]).expanduser()
    if (home / "fleet.conf").is_file():
        return home / "fleet.conf"
    if env.get("CLEARML_CONFIG_FILE"):
        return Path(env["CLEARML_CONFIG_FILE"]).expanduser()
    return home / "clearml.conf" if (home / "clearml.conf").is_file() else None
