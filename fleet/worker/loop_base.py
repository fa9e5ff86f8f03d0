"""What every worker process shares: its row, its signals, its state and heartbeat.

:class:`LoopBase` is the part of a worker's event loop that is the same for a
static worker and its per-task workers (:mod:`fleet.worker.loop`) and for a
dynamic pool or services worker (:mod:`fleet.worker.gpupool`): the row it
re-reads (stop requests, the effective state the manager's schedule driver
computed), the stop it derives from the row, a signal or a manager gone past
its hand-over time, the state it records and its heartbeat.  Writes go
through the shared back-off (:func:`fleet.worker.runner.write_through`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from types import FrameType

from fleet.core.config import Config
from fleet.core.errors import FleetError, StoreUnavailable
from fleet.core.home import Home, manager_pidfile
from fleet.core.models import StopRequest, Task, Worker, WorkerState
from fleet.core.nvml import Nvml
from fleet.core.procs import identity, pidfile_alive
from fleet.core.tasklog import no_room
from fleet.policy.queue_order import QueueOrder
from fleet.store import Store
from fleet.store.faults import Backoff
from fleet.worker.admission import GpuAdmission, record_gpu_uuids
from fleet.worker.runner import write_through

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0


class LoopBase:
    """What every worker process shares: its row (stop requests, the effective
    state the manager's schedule driver computed), signals, state changes and
    heartbeats."""

    admission: GpuAdmission  # set by each kind of loop (busy and drained GPUs, NVML)

    def __init__(self, home: Home, store: Store, config: Config, worker_id: str) -> None:
        self.home = home
        self.store = store
        self.config = config
        self.worker: Worker = store.get_worker(worker_id)
        self.actor = f"worker:{worker_id}"
        self.order = QueueOrder(self.worker.queues, self.worker.order_fairness)
        self.grace = config.fleet.stop_grace_seconds
        self.poll = config.fleet.poll_interval
        self.signals = 0
        self.stopping: StopRequest | None = None
        self.signals_at_stop = 0
        self.stop_by = ""
        self.last_beat = 0.0
        self.last_look = 0.0
        self.handover_s = config.fleet.handover_seconds
        self.manager_parent = os.getppid()  # the manager that spawned us, while it lives
        self.no_space_until = 0.0  # no disk space for environments: pull nothing until then
        self.no_space_reason = ""
        self.manager_gone_at: float | None = None
        self.retry = Backoff()  # store writes after the store was unavailable
        self.registered = False
        self.unsaved: tuple[WorkerState, str] | None = None  # a state the store did not take yet

    def _write(self, write: Callable[[], object]) -> bool:
        """One store write, unless backing off after the store was unavailable."""
        return write_through(self.retry, write)

    def hold_off(self, seconds: float, reason: str) -> None:
        """Pull nothing for ``seconds`` (no disk space), saying why meanwhile."""
        self.no_space_until = max(self.no_space_until, time.monotonic() + seconds)
        self.no_space_reason = reason

    def _warn(self, exc: FleetError) -> None:
        """A store call that failed: an unavailable store is logged once per
        outage by the store, anything else here."""
        if not isinstance(exc, StoreUnavailable):
            log.warning("worker %s: %s", self.worker.id, exc)

    # -- signals only record -----------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1

    def _stop_request(self) -> StopRequest | None:
        """The stop asked for in the store, else one asked for by a signal."""
        request = self.worker.stop_request
        if request is None and self.signals:
            request = StopRequest(by="signal")
        if request is None and self._handover_expired():
            request = StopRequest(by=f"no manager for {self.handover_s:g}s after a hand-over")
            try:  # in the row, so a pool's per-task workers and a later manager see it
                self.store.update_worker(self.worker.id, stop_request=request)
            except FleetError as exc:
                self._warn(exc)
        if request is None:
            return None
        self.stop_by = request.by
        return request

    def _watches_manager(self) -> bool:
        return True

    def _manager_present(self) -> bool:
        """The manager that spawned us still runs (we are its child), or a
        manager has started since (``manager.pid``: pid and start time)."""
        return os.getppid() == self.manager_parent or pidfile_alive(manager_pidfile(self.home))

    def _handover_expired(self) -> bool:
        """True once no manager has been there for ``fleet.handover_seconds``."""
        if not self._watches_manager():
            return False
        if self._manager_present():
            if self.manager_gone_at is not None:
                log.info("worker %s: a manager is back; carrying on", self.worker.id)
            self.manager_gone_at = None
            return False
        now = time.monotonic()
        if self.manager_gone_at is None:
            self.manager_gone_at = now
            log.info("worker %s: no manager; stopping in %gs unless one starts", self.worker.id, self.handover_s)
        return now - self.manager_gone_at >= self.handover_s

    def _look(self, look: bool) -> None:
        """A turn's first step, when woken or signalled: re-read the row, act on a stop asked."""
        if look or self.signals:
            self._refresh()
            self._check_stop()

    def _check_stop(self) -> None:
        """Act on a stop asked in the row (each kind of loop stops its own way)."""
        raise NotImplementedError

    def _refresh(self) -> None:
        """Re-read this worker's row: stop requests and the effective state the
        manager's schedule driver computed (which queues it may pull from)."""
        try:
            self.worker = self.store.get_worker(self.worker.id)
        except FleetError as exc:
            self._warn(exc)

    def _pullable(self) -> list[str]:
        effective = self.worker.effective
        if effective is None:  # not computed yet: wait for it only if a schedule could say no
            return [] if self.worker.schedule else self.order.current()
        allowed = set(effective.pullable)
        return [q for q in self.order.current() if q in allowed]

    def _waiting_state(self) -> tuple[WorkerState, str]:
        """idle (with the queues it waits on) or paused (with why and until when)."""
        effective = self.worker.effective
        pullable = self._pullable()
        when = effective.next_change if effective is not None else None
        until = f" until {when.isoformat(timespec='seconds')}" if when is not None else ""
        why = effective.reason if effective is not None else ""
        if not pullable:
            return WorkerState.PAUSED, (why or "waiting for its schedule") + until
        reason = "waiting for tasks on " + ", ".join(pullable)
        if why and why != "no schedule":
            reason += f" ({why}{until})"
        return WorkerState.IDLE, reason

    def _set_state(self, state: WorkerState, reason: str) -> None:
        """Record our state; one the store could not take is tried again with the heartbeat."""
        self.unsaved = None
        if (state, reason) == (self.worker.state, self.worker.state_reason):
            return
        if not self.retry.ready():
            self.unsaved = (state, reason)
            return
        try:
            self.worker = self.store.set_worker_state(self.worker.id, state, reason, self.actor, last_seen=time.time())
        except StoreUnavailable:
            self.retry.failed()
            self.unsaved = (state, reason)
        except FleetError as exc:
            log.warning("worker %s: %s", self.worker.id, exc)
        else:
            self.retry.ok()

    def _heartbeat(self) -> None:
        if self.unsaved is not None:
            self._set_state(*self.unsaved)
        now = time.time()
        if now - self.last_beat < HEARTBEAT_S:
            return
        if self.registered:
            landed = self._write(lambda: self.store.update_worker(self.worker.id, last_seen=now))
        else:
            landed = self._register()
        if landed:
            self.last_beat = now

    def _register(self) -> bool:
        """Our pid in our row (tried again with the heartbeat until it lands)."""
        pid = os.getpid()
        me = identity(pid)
        start, boot = (me.ticks, me.boot) if me is not None else (None, None)
        self.registered = self._write(
            lambda: self.store.update_worker(
                self.worker.id, pid=pid, pid_start=start, pid_boot=boot, last_seen=time.time()
            )
        )
        return self.registered

    def _room_for_logs(self) -> bool:
        """False while the task logs' file system is full: nothing is claimed
        (checked again a second later; the state says why)."""
        why = no_room(self.home.task_logs)
        if why is None:
            return True
        self.hold_off(1.0, why)
        return False

    def _with_uuids(self, task: Task) -> Task:
        """The task with its GPU UUIDs recorded.  A pool records them for its
        per-task workers, which so never load NVML themselves."""
        return record_gpu_uuids(self.store, self.admission.nvml, task)

    def _admission(self) -> GpuAdmission:
        threshold = self.config.agent.gpu_busy_memory_mb
        return GpuAdmission(Nvml(), self.store, self.worker.host, threshold, self.worker.id)
