"""GPU health: a GPU the hardware condemns is drained, and its task ends.

Two sources, after DCGM's health watches: NVML's events (critical Xid and
double-bit ECC, waited for by one thread of the manager) and NVML's counters
(read on every sampler tick: pending page retirement, pending or failed row
remapping, uncorrected ECC errors, a GPU fallen off the bus).  Either drains
the GPU in the store (``source: health``, with the Xid code or the counter as
the reason), so no new task gets it (:mod:`fleet.worker.admission`), the
drain survives manager restarts, and the worker whose task runs on it is
woken: it stops the task, which ends ``failed`` with the reason and is
retried elsewhere if it has retries left.  A drained GPU stays drained until
a person undrains it (``fleetctl gpu undrain``); a counter that still reads
bad drains it again on the next tick.  A GPU in MIG mode is drained whole
(every slice), as the fault is the card's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from fleet.core.errors import FleetError
from fleet.core.gpuspec import gpu_label, overlap
from fleet.core.nvml import Nvml, NvmlEvents
from fleet.store import Store

log = logging.getLogger(__name__)

ACTOR = "manager:gpu-health"
EVENT_WAIT_MS = 1000


class GpuHealth:
    def __init__(self, store: Store, nvml: Nvml, host: str, wake: Callable[[list[str]], None]) -> None:
        self.store = store
        self.nvml = nvml
        self.host = host
        self.wake = wake
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- counters: one read per sampler tick --------------------------------------
    def check(self) -> None:
        for gpu, reason in self.nvml.health().items():
            self.condemn(gpu, reason)

    def condemn(self, gpu: int, reason: str) -> None:
        """Drain ``gpu`` for its health (once) and wake the workers running a task on it."""
        drained = {d.gpu: d for d in self.store.drained_gpus(self.host)}
        if gpu in drained and drained[gpu].source == "health":
            return
        try:
            self.store.drain_gpu(self.host, gpu, reason, "health", ACTOR)
        except FleetError as exc:
            log.warning("GPU %s: cannot drain it: %s", gpu_label(gpu), exc)
            return
        log.warning("GPU %s drained: %s", gpu_label(gpu), reason)
        running = self.store.running_tasks(host=self.host)
        on_it = [t.worker for t in running if t.worker and overlap(t.gpus, [gpu]) is not None]
        if on_it:
            self.wake(on_it)

    # -- events: one thread --------------------------------------------------------
    def start(self) -> None:
        events = NvmlEvents(self.nvml)
        if not events.open():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(events,), name="gpu-events", daemon=True)
        self._thread.start()
        log.info("GPU health: watching NVML events (critical Xid, double-bit ECC)")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=EVENT_WAIT_MS / 1000 * 3)
            self._thread = None

    def _run(self, events: NvmlEvents) -> None:
        try:
            while not self._stop.is_set():
                try:
                    event = events.wait(EVENT_WAIT_MS)
                    if event is not None:
                        self.condemn(event.gpu, event.reason)
                except Exception:  # a store hiccup must not end the watch
                    log.exception("GPU health: handling an NVML event failed")
        finally:
            events.close()
