"""Worker operations: add (``up``), find, stop; set and clear runtime
properties (ClearML's ``force``); and the views the API answers with.

Adding is all or nothing: the request is planned against the live workers
(:func:`fleet.policy.upplan.plan_up`, pure: every clash is refused before
anything changes), missing queues are created when asked, the new workers
are registered, the working-hours driver recomputes, and their processes are
started (:class:`Processes`, the manager's supervisor).  The manager's lock
serialises these with its supervision loop.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from fleet.core.config import Config
from fleet.core.errors import Conflict, NotFound, StoreUnavailable, UsageError
from fleet.core.gpuspec import gpu_label, overlap
from fleet.core.models import RuntimeProperty, Worker, WorkerState
from fleet.core.nvml import Nvml
from fleet.core.validate import worker_id as check_worker_id
from fleet.policy.upplan import Plan, UpRequest, check_queues, plan_up
from fleet.service.wake import Wake
from fleet.store import Store

FORCE_VALUES = ("on", "off")


class Processes(Protocol):
    """The workers' processes (the manager's :class:`fleet.manager.supervise.WorkerSupervisor`)."""

    def spawn(self, worker: Worker) -> object: ...

    def request_stop(self, worker_id: str, drain: bool, requeue: bool, by: str) -> None: ...

    def has(self, worker_id: str) -> bool:
        """A process of this worker is known (spawned or adopted)."""
        ...


@dataclass(frozen=True)
class WorkerView:
    """A worker as the API shows it."""

    worker: Worker
    tasks: list[str]  # running task ids; a pool's or services worker's per-task workers' count for it
    properties: dict[str, RuntimeProperty]
    drained: dict[str, str]  # GPU label -> why, for the drained GPUs it holds


@dataclass(eq=False)
class Workers:
    store: Store
    wake: Wake
    processes: Processes
    config: Config
    hostname: str
    nvml: Nvml
    lock: threading.RLock
    closed: str | None = field(default=None, init=False)  # why no worker may be added (the manager is shutting down)

    # -- views --------------------------------------------------------------------------
    def views(self, workers: list[Worker]) -> list[WorkerView]:
        running = self.store.running_by_owner()  # a pool's or services worker's per-task children count for it
        props = self.store.runtime_properties()
        drains = self.store.drained_gpus()
        return [
            WorkerView(
                worker=w,
                tasks=running.get(w.id, []),
                properties=props.get(w.id, {}),
                drained={
                    gpu_label(d.gpu): d.reason
                    for d in drains
                    if d.host == w.host and overlap([d.gpu], w.gpus) is not None
                },
            )
            for w in workers
        ]

    def all(self, include_dead: bool = False) -> list[WorkerView]:
        return self.views(self.store.list_workers(include_dead=include_dead))

    def worker(self, worker_id: str) -> Worker:
        return self.store.get_worker(worker_id)

    def get(self, worker_id: str) -> WorkerView:
        return self.views([self.store.get_worker(worker_id)])[0]

    # -- up -----------------------------------------------------------------------------
    def add(self, request: UpRequest, actor: str) -> tuple[list[Worker], list[str]]:
        """Plan, validate and start the workers of an ``up``; all or nothing.
        Returns the workers (new, then those already running with this spec) and warnings."""
        with self.lock:
            if self.closed is not None:
                raise UsageError(self.closed)
            plan = self._plan(request, self.store.list_workers())
            existing = {q.name for q in self.store.list_queues()}
            missing = [q for q in check_queues(request.queues) if q not in existing]
            if missing and not request.create_queue:
                raise NotFound(
                    f"queue {missing[0]!r} does not exist; pass --create-queue or run: fleetctl queue create {missing[0]}",
                    field="queues",
                )
            for name in missing:
                self.store.create_queue(name, [], actor)
            started = [self.store.register_worker(worker, actor) for worker in plan.new]
            if plan.new:
                self.wake.schedule()
            for worker in started:
                self.processes.spawn(worker)
        self.wake.queues(check_queues(request.queues))
        return started + plan.existing, plan.warnings

    def _plan(self, request: UpRequest, live: list[Worker]) -> Plan:
        """The workers ``request`` means; the caller's worker name and id win over ours."""
        if request.worker_name is None:
            host = self.hostname
        else:
            host = check_worker_id(request.worker_name, "worker_name") if request.worker_name else socket.gethostname()
        fixed = self.config.agent.worker_id if request.worker_id is None else request.worker_id
        return plan_up(request, live, host, self.nvml, fixed, machine=self.hostname)

    def find(self, request: UpRequest) -> list[Worker]:
        """The live worker an ``up``/``daemon`` line started (what ``daemon ... --stop`` stops), if any."""
        with self.lock:
            live = [w for w in self.store.list_workers() if w.state != WorkerState.DEAD]
            try:
                plan = self._plan(request, live)
            except Conflict:  # the line names a worker that runs with another spec: not the one it started
                return []
            return plan.existing

    def stop(self, worker_ids: list[str], drain: bool, requeue: bool, by: str) -> list[Worker]:
        """Ask each worker to stop (through its row; a worker with no process is marked dead)."""
        with self.lock:
            workers = [self.store.get_worker(wid) for wid in worker_ids]
            for worker in workers:
                if worker.state == WorkerState.DEAD:
                    continue
                self.processes.request_stop(worker.id, drain, requeue, by)
                # another host's worker reads the stop in its row; only ours can be known to have no
                # process, and a lost one's host is gone (if it comes back, its manager sees the stop)
                gone = worker.state == WorkerState.LOST
                if gone or (worker.host == self.hostname and not self.processes.has(worker.id)):
                    try:
                        self.store.set_worker_state(worker.id, WorkerState.DEAD, "stopped", "manager")
                    except StoreUnavailable:
                        pass  # no process to stop; its row says so once the store takes writes
        self.wake.workers(w.id for w in workers)
        return workers

    # -- runtime properties -------------------------------------------------------------
    def properties(self, worker_id: str) -> tuple[Worker, dict[str, RuntimeProperty]]:
        view = self.get(worker_id)
        return view.worker, view.properties

    def set_property(self, worker_id: str, key: str, value: str, expiry: float | None, actor: str) -> None:
        """Set a runtime property; ``force`` (``on``/``off``) overrides the worker's
        schedule until ``expiry`` seconds from now (none: until cleared)."""
        if key == "force" and value not in FORCE_VALUES:
            raise UsageError(f"runtime property force: expected 'on' or 'off', got {value!r}", field="value")
        self.store.get_worker(worker_id)
        expires_at = time.time() + expiry if expiry else None
        self.store.set_runtime_property(worker_id, key, value, expires_at, actor)
        self.wake.schedule()

    def clear_property(self, worker_id: str, key: str, actor: str, *, missing_ok: bool = False) -> None:
        """Remove a runtime property; one the worker does not have is a 404 unless ``missing_ok``."""
        self.store.get_worker(worker_id)
        if not self.store.delete_runtime_property(worker_id, key, actor) and not missing_ok:
            raise NotFound(f"worker {worker_id} has no runtime property {key!r}", field="key")
        self.wake.schedule()
