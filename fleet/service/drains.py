"""Draining GPUs by hand: ``fleetctl gpu drain|undrain HOST:INDEX`` and the API.

A GPU is named ``HOST:INDEX``: the host part of worker ids (``agent.worker_name``,
else the hostname) and a GPU index, or ``G:S`` for MIG slice S of GPU G
(``box1:3``, ``box1:0:2``).  The host must be one the store knows (a worker's,
or this manager's) and the GPU one of that host's (a worker's GPU, or one NVML
lists here).

A drain by hand is Slurm's ``state=drain``: no new task gets the GPU and the
task running on it finishes as it would (a GPU drained for its health ends
its task: :mod:`fleet.metrics.health`).  Undrain returns the GPU, whichever
drained it.  Draining a whole GPU covers its MIG slices.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fleet.core.errors import NotFound, UsageError
from fleet.core.gpuspec import MAX_GPUS, MIG_STRIDE, format_gpus, gpu_label, mig_unit, parent_gpu

if TYPE_CHECKING:  # `fleetctl gpu drain` checks its argument here without loading the store
    from fleet.core.models import GpuDrain
    from fleet.core.nvml import Nvml
    from fleet.store import Store

log = logging.getLogger(__name__)

_REF = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.\-]{0,252}):(\d{1,4})(?::(\d{1,2}))?$")
EXPECTED = "expected HOST:INDEX, e.g. box1:3, or HOST:GPU:SLICE for a MIG slice, e.g. box1:0:2"
MAX_REASON = 500


@dataclass(frozen=True)
class GpuRef:
    host: str
    gpu: int  # a unit: see fleet.gpus

    @property
    def name(self) -> str:
        return f"{self.host}:{gpu_label(self.gpu)}"


def parse_gpu_ref(text: str) -> GpuRef:
    match = _REF.match(text.strip())
    if not match:
        raise UsageError(f"GPU {text!r}: {EXPECTED}", field="gpu")
    host, gpu = match.group(1), int(match.group(2))
    if gpu >= MAX_GPUS:
        raise UsageError(f"GPU {text!r}: no GPU index above {MAX_GPUS - 1}", field="gpu")
    if match.group(3) is None:
        return GpuRef(host, gpu)
    slice_ = int(match.group(3))
    if slice_ >= MIG_STRIDE:
        raise UsageError(f"GPU {text!r}: no MIG slice above {MIG_STRIDE - 1}", field="gpu")
    return GpuRef(host, mig_unit(gpu, slice_))


def known_gpus(store: Store, nvml: Nvml, local_host: str) -> dict[str, set[int]]:
    """Host -> the units and physical GPUs fleet knows there (workers' GPUs, NVML's here)."""
    out: dict[str, set[int]] = {local_host: set()}
    for worker in store.list_workers(include_dead=True):
        units = set(worker.gpus or [])
        out.setdefault(worker.host, set()).update(units | {parent_gpu(u) for u in units})
    for unit in nvml.units():
        out[local_host].update({unit.unit, unit.gpu})
    for drain in store.drained_gpus():
        out.setdefault(drain.host, set()).add(drain.gpu)
    return out


def _check_known(ref: GpuRef, known: dict[str, set[int]]) -> None:
    if ref.host not in known:
        raise NotFound(f"GPU {ref.name}: no host {ref.host!r} here (hosts: {', '.join(sorted(known))})", field="gpu")
    if ref.gpu not in known[ref.host]:
        have = format_gpus(sorted(known[ref.host])) or "none"
        raise NotFound(f"GPU {ref.name}: host {ref.host} has no GPU {gpu_label(ref.gpu)} (GPUs: {have})", field="gpu")


def check_reason(reason: str) -> str:
    text = reason.strip()
    if len(text) > MAX_REASON or any(ord(c) < 32 for c in text):
        raise UsageError(f"--reason: at most {MAX_REASON} printable characters on one line", field="reason")
    return text


def drain(store: Store, nvml: Nvml, local_host: str, ref: GpuRef, reason: str, actor: str) -> GpuDrain:
    _check_known(ref, known_gpus(store, nvml, local_host))
    return store.drain_gpu(ref.host, ref.gpu, check_reason(reason) or f"drained by {actor}", "manual", actor)


def undrain(store: Store, nvml: Nvml, local_host: str, ref: GpuRef, actor: str) -> GpuDrain | None:
    _check_known(ref, known_gpus(store, nvml, local_host))
    return store.undrain_gpu(ref.host, ref.gpu, actor)
