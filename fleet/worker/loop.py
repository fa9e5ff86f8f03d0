"""The worker's event loop: one execution slot that pulls tasks from its queues.

A worker is its own process (``python -m fleet.worker``), in its own session,
and records everything it does in the store itself, so it keeps going and
its results land even while the manager is down.

The loop is single-threaded, in the style of Supervisor: signal handlers only
record the signal; each turn the loop waits on ``select`` for a wake-up
datagram (new work, abort, stop), task output or the next timed move, then
acts.  Dispatch is event-driven; the fallback poll only covers a lost wake-up.
Running the task itself (launch, capture, abort, timeout, verdict, record) is
the task runner's (:mod:`fleet.worker.runner`); the loops here only drive it.

:class:`WorkerLoop` is a static worker (one task at a time on its GPU
group).  :class:`TaskWorker` is the per-task worker a dynamic pool or
services worker starts for each task it claims (:mod:`fleet.worker.gpupool`):
it runs the one task it is given under its own id, takes stop requests from
its pool's row, dies with its pool (``PR_SET_PDEATHSIG``) and then exits.

Hand-over: a manager that gets SIGTERM exits and leaves its workers running
(see :mod:`fleet.manager.daemon`).  A static or pool worker notices that no manager
is there (its parent, the manager that spawned it, is gone and
``manager.pid`` names no live process); if none appears within
``fleet.handover_seconds`` it writes a stop request into its own row (so a
pool's per-task workers get it too) and stops exactly as on ``fleetctl
stop``: tasks are stopped as a group and end ``stopped``.

The store may be unavailable for a while (a full disk, a read-only file:
:mod:`fleet.store.faults`).  A worker then stays up: writes that can wait
(state, heartbeat, claims) are skipped and tried again with back-off
(:class:`~fleet.store.faults.Backoff`); the writes that must land (a task's
pid, a task's end) are kept and retried until the store takes them, and
until then the worker claims nothing, so nothing finished is lost and nothing
runs twice.  A task whose log cannot be written (``ENOSPC``, ``EIO``) is
stopped as an abort is (its group gets SIGTERM, then SIGKILL after the grace)
and ends ``failed`` with ``log cannot be written: <why>``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

from fleet.core.config import Config
from fleet.core.errors import StoreUnavailable
from fleet.core.gpuspec import gpu_label
from fleet.core.home import Home
from fleet.core.models import Runner, Task, WorkerMode, WorkerState
from fleet.core.outcome import StopCause
from fleet.core.procs import become_subreaper
from fleet.core.wakeups import Listener
from fleet.store import Store
from fleet.worker.docker.engine import EngineProbe
from fleet.worker.loop_base import LoopBase
from fleet.worker.runner import CHECK_S, RunnerProfile, TaskRunner

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
BUSY_REASON = "running task {task}"  # a static worker's state while it runs a task
NOT_PULLING = "not pulling: "  # then why: disk, engine, GPUs
DRAINED_REASON = NOT_PULLING + "GPU drained"


class RunnerLoop(LoopBase):
    """The turn a static worker and a per-task worker share: stop requests
    reach the runner's task, and the wait covers the wake-up socket and it."""

    def __init__(self, home: Home, store: Store, config: Config, worker_id: str) -> None:
        super().__init__(home, store, config, worker_id)
        self.admission = self._admission()
        profile = RunnerProfile(worker_id, self._runner_kind(), end_with_claim=self._claims())
        self.runner = TaskRunner(
            home, store, config, profile, retry=self.retry, admission=self.admission, hold_off=self.hold_off
        )

    def _runner_kind(self) -> Runner:
        return Runner.STATIC

    def _claims(self) -> bool:
        """Whether this loop claims its tasks (then a task's end lands with the next claim)."""
        return False

    def _check_stop(self) -> None:
        """Begin a stop asked for in the store or by a signal; a signal that
        comes after the stop began forces it (the task group is killed now)."""
        if self.stopping is None:
            request = self._stop_request()
            if request is None:
                return
            self.stopping = request
            self.signals_at_stop = self.signals
            how = "draining: no new tasks, waiting for the running one" if request.drain else "stopping"
            self._set_state(WorkerState.STOPPING, f"{how} ({self.stop_by})")
            if not request.drain:
                self.runner.stop(StopCause.WORKER_STOP, f"worker stopped by {self.stop_by}", requeue=request.requeue)
        if self.signals > self.signals_at_stop:
            self.runner.stop(StopCause.WORKER_STOP, "worker stop forced", requeue=self.stopping.requeue)
            self.runner.kill_now()

    def _turn(self, listener: Listener) -> bool:
        """Wait, then drive the runner; True when the row is to be looked at again."""
        if not self.signals:
            self.runner.wait([listener.fileno()], self.poll)
        look = listener.drain() > 0 or time.monotonic() - self.last_look >= CHECK_S
        if look:
            self.last_look = time.monotonic()
        self.runner.watch(look)
        return look


class WorkerLoop(RunnerLoop):
    """A static worker: pulls a task from its queues whenever it is free."""

    def __init__(self, home: Home, store: Store, config: Config, worker_id: str) -> None:
        super().__init__(home, store, config, worker_id)
        self.engine = EngineProbe(self.worker.id) if self.worker.options.docker is not None else None

    def _claims(self) -> bool:
        # On a store many hosts share, a task's end waits for its log to be shipped
        # (fleet.worker.logship) and is recorded by itself as soon as it is, not
        # with a next claim that may be a poll away.
        return not self.store.shared

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        listener = Listener(self.home.root, self.worker.id)
        become_subreaper()
        if self.engine is not None:
            from fleet.worker.docker.cleanup import sweep  # the docker SDK only where docker mode is used

            for name in sweep(socket.gethostname(), str(self.home.root), self.store):
                log.info("worker %s: removed orphan container %s", self.worker.id, name)
        self._register()
        self._set_state(*self._waiting_state())
        log.info("worker %s: started (pid %d), queues %s", self.worker.id, os.getpid(), ", ".join(self.worker.queues))
        try:
            look = True
            while True:
                self._look(look)
                if self.runner.proc is None and self.stopping is None:
                    self._pull()  # the last task's end lands here: in the claim's transaction, or alone
                else:
                    self.runner.flush()  # the running task's pid; the last end, while stopping
                    if self.runner.free and self.stopping is not None:
                        break
                look = self._turn(listener)
                self._heartbeat()
        finally:
            listener.close()
        self._set_state(WorkerState.DEAD, "stopped")
        log.info("worker %s: stopped", self.worker.id)
        return 0

    def _pull(self) -> None:
        """Claim the next task and start it, unless something says not to (said
        in the state).  The last task's end is recorded in the claim's
        transaction, or alone when no claim is made or none succeeds."""
        task = self._claim()
        if task is None:
            return
        if task.queue is not None:
            self.order.served(task.queue)
        task = self._with_uuids(task)
        # the claim recorded this state: kept here without reading the row back
        # (a state the claim could not take, such as stopping, is read on the next look)
        self.worker = dataclasses.replace(
            self.worker, state=WorkerState.BUSY, state_reason=BUSY_REASON.replace("{task}", task.id)
        )
        self.runner.start(task, self.worker)

    def _claim(self) -> Task | None:
        """The next task, claimed (None: not now, or none waiting)."""
        if not self.retry.ready():
            return None
        queues = self._pullable()
        why = self._not_pulling(queues)
        if why is not None:
            self.runner.flush()  # the last task's end, alone
            if why:
                self._set_state(WorkerState.IDLE, f"{NOT_PULLING}{why}")
            return None
        # idle or paused is recorded only when nothing was claimed, and busy in
        # the claim's own transaction: a task costs two state writes less
        task = self.runner.claim_next(self.worker, queues, BUSY_REASON) if queues else None
        if task is None:
            self.runner.flush()  # the last task's end, alone, when no claim carried it
            why = self._gpus_unavailable(self.admission.unavailable, queues)
            if why:  # the claim found a GPU drained (it checks that itself)
                self._set_state(WorkerState.IDLE, f"{NOT_PULLING}{why}")
            elif why is None:
                self._set_state(*self._waiting_state())
        return task

    def _not_pulling(self, queues: list[str]) -> str | None:
        """Why nothing may be claimed now (disk, engine, GPUs used by others);
        "" when the store is unavailable (nothing to say); None when a claim
        may go ahead.  A drained GPU is the claim's to check, in its own
        transaction: :meth:`_claim` says so when it got nothing."""
        if time.monotonic() < self.no_space_until or not self._room_for_logs():
            return self.no_space_reason
        problem = self.engine.problem() if self.engine is not None else None
        if problem is not None:
            return problem
        drained = self.worker.state_reason.startswith(DRAINED_REASON)  # still? read before taking the write lock
        return self._gpus_unavailable(self.admission.unavailable if drained else self.admission.busy, queues)

    def _gpus_unavailable(self, check: Callable[[list[int]], dict[int, str]], queues: list[str]) -> str | None:
        """Why this worker's GPUs may not be handed out, by ``check`` (drained,
        used by others), in words; None when they may; "" when the store is
        unavailable."""
        try:
            busy = check(self.worker.gpus or []) if queues else {}
        except StoreUnavailable:
            self.retry.failed()
            return ""
        if not busy:
            return None
        why = "; ".join(f"GPU {gpu_label(g)}: {text}" for g, text in sorted(busy.items()))
        drained = any(text.startswith("drained") for text in busy.values())
        return f"GPU {'drained' if drained else 'busy'} ({why})"


class TaskWorker(RunnerLoop):
    """One task's worker under a pool or services worker: runs the task its
    pool claimed for it under ``run_as``, then exits.  It reads its pool's
    row (stop requests) and writes no state of its own."""

    def __init__(self, home: Home, store: Store, config: Config, worker_id: str, task_id: str, run_as: str) -> None:
        super().__init__(home, store, config, worker_id)
        self.task_id = task_id
        self.run_as = run_as

    def _runner_kind(self) -> Runner:
        return Runner.SERVICE if self.worker.mode == WorkerMode.SERVICES else Runner.POOL

    def _watches_manager(self) -> bool:
        return False  # it follows its pool's row; the pool watches the manager

    def _set_state(self, state: WorkerState, reason: str) -> None:
        """The row is its pool's: nothing of this worker's own is recorded there."""

    def run(self, parent: int | None = None) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if not self._tie_to(parent):
            return 1
        listener = Listener(self.home.root, self.run_as)
        become_subreaper()
        task = self.runner.take_claimed(self.task_id, self.run_as)
        if task is None:
            listener.close()
            return 1
        self.runner.start(task, dataclasses.replace(self.worker, id=self.run_as, gpus=task.gpus))
        try:
            look = True
            while not self.runner.free:
                self._look(look)
                self.runner.flush()
                if self.runner.free:
                    break
                look = self._turn(listener)
        finally:
            listener.close()
        return 0

    def _tie_to(self, parent: int | None) -> bool:
        """Die with the pool (the manager then fails the task), so no task
        outlives the pool that accounts for its GPUs."""
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - Linux has prctl
            log.warning("worker %s: cannot tie itself to its pool (no prctl)", self.run_as)
        if parent is not None and os.getppid() != parent:
            log.error("worker %s: its pool (pid %d) is already gone", self.run_as, parent)
            return False
        return True
