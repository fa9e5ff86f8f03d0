"""The Hosts section of ``fleetctl status``: one row per host of the fleet.

Built from the workers the manager lists (every host's on a shared store):
per host its live workers, the GPUs they hold, how many are busy, and the
tasks they run.  Dead workers do not count (``status --all`` lists them in
the Workers table).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleet.cli import output
from fleet.cli.output import Col


@dataclass
class HostLine:
    name: str
    workers: int = 0
    busy: int = 0
    gpus: set[str] = field(default_factory=set)
    tasks: int = 0

    def add(self, worker: dict[str, Any]) -> None:
        if worker["state"] == "dead":
            return
        self.workers += 1
        self.busy += worker["state"] == "busy"
        self.gpus.update(str(g) for g in worker["gpus"])
        self.tasks += len(worker["tasks"])


def host_lines(workers: list[dict[str, Any]]) -> list[HostLine]:
    """One line per host that has a worker in ``workers``, by name."""
    lines: dict[str, HostLine] = {}
    for w in workers:
        lines.setdefault(w["host"], HostLine(w["host"])).add(w)
    return [lines[name] for name in sorted(lines)]


def hosts_table(workers: list[dict[str, Any]], wide: bool = False) -> None:
    output.table(
        "Hosts",
        [
            Col("HOST"),
            Col("WORKERS", fixed=True, right=True),
            Col("BUSY", fixed=True, right=True),
            Col("GPUS", fixed=True, right=True),
            Col("TASKS", fixed=True, right=True),
        ],
        ([h.name, h.workers, h.busy, len(h.gpus), h.tasks] for h in host_lines(workers)),
        wide=wide,
    )
