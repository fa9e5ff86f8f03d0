"""A host of the fleet: what it registers, its lease as the store keeps it,
and what declaring it lost did (the ``hosts`` table; see
:mod:`fleet.manager.host_lease`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class HostState(str, enum.Enum):
    """A host of the fleet, as its lease says (the ``hosts`` table)."""

    UP = "up"  # its manager renews its lease
    LOST = "lost"  # its lease expired: another manager ended its attempts (see Store.declare_lost_hosts)
    LEFT = "left"  # its manager stopped cleanly (``fleetctl stop``)


@dataclass(frozen=True)
class HostInfo:
    """What a host registers: its GPUs, fleet's version, its manager's API URL and pid."""

    gpus: list[int]
    version: str
    api_url: str
    pid: int


@dataclass(frozen=True)
class HostRow:
    """A host as the store keeps it.  ``lease_age`` is the store's clock (on
    PostgreSQL the server's: hosts' clocks may differ) minus ``renewed_at``, at
    the time of the read; ``epoch`` counts its registrations (a host declared
    lost comes back with a new one)."""

    name: str
    gpus: list[int]
    version: str
    api_url: str
    pid: int | None
    started_at: float
    renewed_at: float
    lease_seconds: float
    state: HostState
    epoch: int
    lost_at: float | None
    lost_by: str | None
    lease_age: float

    @property
    def expired(self) -> bool:
        return self.state == HostState.UP and self.lease_age > self.lease_seconds


@dataclass(frozen=True)
class LostHost:
    """What declaring one host lost did (:meth:`fleet.store.interface.Store.declare_lost_hosts`)."""

    name: str
    workers: list[str]  # shown lost
    failed: list[str]  # tasks whose running attempt ended failed (``host <name> lost``)
    requeued: list[str]  # of those, the ones queued again (retries left)
    queues: list[str]  # the queues they went back to


def host_lost_reason(host: str) -> str:
    """The reason a lost host's attempts end with, and its workers show."""
    return f"host {host} lost"
