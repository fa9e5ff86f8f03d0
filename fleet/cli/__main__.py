"""``python -m fleet.cli`` is ``fleetctl``."""

from fleet.cli.main import entry

entry()
