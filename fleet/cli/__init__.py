"""``fleetctl``: the command line (fleet/cli/main.py).

httpx's own command line (``httpx._main``) imports rich and pygments when they
are installed, at every ``import httpx``; fleetctl never uses it, and skipping
it saves tens of milliseconds per command (httpx then defines a stub ``main``).
"""

import sys

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
