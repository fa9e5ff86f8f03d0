"""GPU-aware admission: a GPU that other people's processes use is not handed out.

Before a static worker pulls, and before a pool hands out a GPU, NVML is
asked which processes use each GPU.  Memory used by processes fleet did not
start (not a task's session on this host) above ``agent.gpu_busy_memory_mb``
makes the GPU busy until it drops again.  Without NVML (no driver: logical
GPUs) the check is off, and the worker says so once in its log.

A drained GPU (``fleetctl gpu drain``, or drained for its health by the
manager: :mod:`fleet.metrics.health`) is never handed out, NVML or not; a
task running on a GPU drained for its health is failed by its worker
(:meth:`GpuAdmission.faults`) and retried elsewhere if it has retries left.
"""

from __future__ import annotations

import dataclasses
import logging

from fleet.core.errors import FleetError
from fleet.core.gpuspec import gpu_label, parent_gpu
from fleet.core.models import GpuDrain, Task
from fleet.core.nvml import Nvml
from fleet.store import Store

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class GpuAdmission:
    nvml: Nvml
    store: Store
    host: str
    threshold_mb: int
    who: str
    _said_off: bool = dataclasses.field(default=False, init=False)

    @property
    def on(self) -> bool:
        if self.nvml.available:
            return True
        if not self._said_off:
            self._said_off = True
            log.info("worker %s: GPU-aware admission is off: NVML is not available (%s)", self.who, self.nvml.error)
        return False

    def our_pids(self) -> set[int]:
        """Session leaders of every task running on this host: fleet's processes."""
        return {t.pid for t in self.store.running_tasks(host=self.host) if t.pid}

    def drained(self, gpus: list[int]) -> dict[int, GpuDrain]:
        """Those of ``gpus`` that are drained: a unit, or the GPU a MIG slice is on."""
        if not gpus:
            return {}
        drains = {d.gpu: d for d in self.store.drained_gpus(self.host)}
        out: dict[int, GpuDrain] = {}
        for unit in gpus:
            found = drains.get(unit) or drains.get(parent_gpu(unit))
            if found is not None:
                out[unit] = found
        return out

    def faults(self, gpus: list[int]) -> str:
        """Why a task on ``gpus`` must end: the health drains among them, in words ("" if none)."""
        return "; ".join(
            f"GPU {gpu_label(g)} drained for its health: {d.reason}"
            for g, d in sorted(self.drained(gpus).items())
            if d.source == "health"
        )

    def unavailable(self, gpus: list[int]) -> dict[int, str]:
        """GPU -> why no new task may have it: drained, else busy."""
        out = {g: f"drained ({d.reason})" for g, d in self.drained(gpus).items()}
        out.update({g: why for g, why in self.busy([g for g in gpus if g not in out]).items()})
        return out

    def busy(self, gpus: list[int]) -> dict[int, str]:
        """GPU -> why it is busy, for those of ``gpus`` over the threshold."""
        if not gpus or not self.on:
            return {}
        out: dict[int, str] = {}
        for index, procs in self.nvml.foreign_gpu_processes(self.our_pids()).items():
            if index not in gpus:
                continue
            used = sum(p.memory_used_mb or 0 for p in procs)
            if used > self.threshold_mb:
                pids = ", ".join(str(p.pid) for p in procs[:5]) + (" ..." if len(procs) > 5 else "")
                out[index] = (
                    f"{used:.0f} MiB used by processes fleet did not start (pid {pids}; "
                    f"over agent.gpu_busy_memory_mb={self.threshold_mb})"
                )
        return out


def record_gpu_uuids(store: Store, nvml: Nvml, task: Task) -> Task:
    """Record the attempt's GPU UUIDs (how its devices are named to the container
    runtime) and return the task with them; unchanged without NVML, or when
    they are recorded already."""
    if not task.gpus or task.gpu_uuids or not nvml.available:
        return task
    uuids = nvml.uuids(task.gpus)
    if not uuids:
        return task
    try:
        store.set_attempt_gpu_uuids(task.id, task.attempt, uuids)
    except FleetError as exc:
        log.warning("task %s: cannot record its GPU UUIDs: %s", task.id, exc)
    return dataclasses.replace(task, gpu_uuids=uuids)
