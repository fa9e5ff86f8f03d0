"""The hosts of a fleet as its views show them, and which host a view covers
(``fleetctl status --host NAME``, ``fleetctl tasks --host NAME``, the API's
``host`` parameter).

Every host of one store is in every view by default.  A host is known once
its manager has registered it (the host registry with its lease) or it has
registered a worker (dead ones count: its tasks stay listable); a name no
host has is an error that names the known ones (404, field ``host``), not an
empty list, so a typo is told apart from an idle host.
"""

from __future__ import annotations

from fleet.core.errors import NotFound
from fleet.core.hosts import HostRow
from fleet.store import Store

MAX_SHOWN = 20  # known hosts named in the error; a larger fleet gets "... and N more"


def hosts(store: Store) -> list[HostRow]:
    """Every registered host, by name, with its lease's age and its state (up, lost, left)."""
    return store.list_hosts()


def known_hosts(store: Store) -> list[str]:
    """Every host that has registered itself or a worker, sorted."""
    return sorted({w.host for w in store.worker_units() if w.host} | {h.name for h in store.list_hosts()})


def check_host(store: Store, name: str | None) -> str | None:
    """``name`` when the fleet knows it (None: every host); else :class:`NotFound` naming the known hosts."""
    if name is None:
        return None
    known = known_hosts(store)
    if name in known:
        return name
    shown = ", ".join(known[:MAX_SHOWN]) + (f" ... and {len(known) - MAX_SHOWN} more" if len(known) > MAX_SHOWN else "")
    told = f"known hosts: {shown}" if known else "no host has registered yet"
    raise NotFound(f"host {name[:200]!r} is not in this fleet; {told}", field="host")
