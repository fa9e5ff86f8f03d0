"""The Hosts section of ``fleetctl status``: one row per host of the fleet.

From the host registry (``GET /hosts``: each host's state — ``up``, ``lost``
when its lease expired and another manager took its work, ``left`` when its
manager stopped — and its lease's age on the store's clock) and the workers
the manager lists (every host's on a shared store): per host its live
workers, how many are busy, its GPUs (those it registered; else those its
workers hold), and the tasks they run.  Dead
workers do not count (``status --all`` lists them in the Workers table).  A
host whose manager has not registered it (an older manager) shows ``-``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleet.cli import output
from fleet.cli.output import Col


@dataclass
class HostLine:
    name: str
    state: str = "-"
    lease: str = "-"
    workers: int = 0
    busy: int = 0
    gpus: set[str] = field(default_factory=set)
    tasks: int = 0
    registered_gpus: int | None = None  # what the host has, from the registry (None: not registered)

    @property
    def gpu_count(self) -> int:
        """The GPUs the host registered, else those its workers hold."""
        return len(self.gpus) if self.registered_gpus is None else self.registered_gpus

    def add(self, worker: dict[str, Any]) -> None:
        if worker["state"] == "dead":
            return
        self.workers += 1
        self.busy += worker["state"] == "busy"
        self.gpus.update(str(g) for g in worker["gpus"])
        self.tasks += len(worker["tasks"])


def lease_text(host: dict[str, Any]) -> str:
    """``2.1s/30s``: the lease's age and its length (``left``: the manager stopped, no lease)."""
    if host["state"] == "left":
        return "-"
    return f"{host['lease_age_s']:.1f}s/{host['lease_seconds']:g}s"


def host_lines(workers: list[dict[str, Any]], hosts: list[dict[str, Any]]) -> list[HostLine]:
    """One line per host, registered or with a worker in ``workers``, by name."""
    lines: dict[str, HostLine] = {}
    for h in hosts:
        lines[h["name"]] = HostLine(h["name"], h["state"], lease_text(h), registered_gpus=len(h["gpus"]))
    for w in workers:
        lines.setdefault(w["host"], HostLine(w["host"])).add(w)
    return [lines[name] for name in sorted(lines)]


def hosts_table(workers: list[dict[str, Any]], hosts: list[dict[str, Any]], wide: bool = False) -> None:
    output.table(
        "Hosts",
        [
            Col("HOST"),
            Col("STATE", fixed=True),
            Col("LEASE", fixed=True, right=True),
            Col("WORKERS", fixed=True, right=True),
            Col("BUSY", fixed=True, right=True),
            Col("GPUS", fixed=True, right=True),
            Col("TASKS", fixed=True, right=True),
        ],
        ([h.name, h.state, h.lease, h.workers, h.busy, h.gpu_count, h.tasks] for h in host_lines(workers, hosts)),
        wide=wide,
    )
    for line in host_lines(workers, hosts):
        if line.state == "lost":
            output.info(
                f"host {line.name}: lost (its lease expired; its running tasks ended failed, "
                "queued again where retries were left)"
            )
