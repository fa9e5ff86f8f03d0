"""GPU operations: what each host has and which are drained; drain and undrain by hand.

A drained GPU gets no new task; draining or returning one wakes every live
worker, so the ones that hold it (or wait for it) act at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.core.gpuspec import is_mig, parent_gpu
from fleet.core.models import GpuDrain
from fleet.core.nvml import Nvml
from fleet.service.drains import drain, known_gpus, parse_gpu_ref, undrain
from fleet.service.wake import Wake
from fleet.store import Store


@dataclass(frozen=True)
class GpuView:
    """One GPU unit fleet knows on a host, with its drain (None when in service)."""

    host: str
    unit: int
    parent: int | None  # the physical GPU of a MIG slice
    uuid: str | None  # NVML's, on this host
    drained: GpuDrain | None


class Gpus:
    def __init__(self, store: Store, wake: Wake, nvml: Nvml, hostname: str) -> None:
        self.store = store
        self.wake = wake
        self.nvml = nvml
        self.hostname = hostname

    def all(self) -> tuple[list[GpuView], list[GpuDrain]]:
        """Every unit per host (a GPU in MIG mode by its slices, unless it is drained whole), and every drain."""
        drains = {(d.host, d.gpu): d for d in self.store.drained_gpus()}
        uuids = {u.unit: u.uuid for u in self.nvml.units()}
        out = []
        for host, units in sorted(known_gpus(self.store, self.nvml, self.hostname).items()):
            mig_parents = {parent_gpu(u) for u in units if is_mig(u)}
            for unit in sorted(u for u in units if u not in mig_parents or (host, u) in drains):
                found = drains.get((host, unit)) or drains.get((host, parent_gpu(unit)))
                out.append(
                    GpuView(
                        host=host,
                        unit=unit,
                        parent=parent_gpu(unit) if is_mig(unit) else None,
                        uuid=uuids.get(unit) if host == self.hostname else None,
                        drained=found,
                    )
                )
        return out, list(drains.values())

    def drain(self, gpu: str, reason: str, actor: str) -> GpuDrain:
        """Drain ``HOST:INDEX`` (a unit fleet knows)."""
        done = drain(self.store, self.nvml, self.hostname, parse_gpu_ref(gpu), reason, actor)
        self.wake.everyone()
        return done

    def undrain(self, gpu: str, actor: str) -> tuple[str, GpuDrain | None]:
        """Return ``HOST:INDEX`` to service: its name and the drain it had (None: it had none)."""
        ref = parse_gpu_ref(gpu)
        was = undrain(self.store, self.nvml, self.hostname, ref, actor)
        self.wake.everyone()
        return ref.name, was
