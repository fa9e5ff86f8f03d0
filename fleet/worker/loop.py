"""The worker: one execution slot that pulls tasks from its queues and runs them.

A worker is its own process (``python -m fleet.worker``), in its own session,
and records everything it does in the store itself, so it keeps going and
its results land even while the manager is down.

The loop is single-threaded, in the style of Supervisor: signal handlers only
record the signal; each turn the loop waits on ``select`` for a wake-up
datagram (new work, abort, stop), task output or the next timed move, then
acts.  Dispatch is event-driven; the fallback poll only covers a lost wake-up.

:class:`WorkerLoop` runs a static worker (one task at a time on its GPU
group) and, with ``task_id``, the per-task worker a dynamic pool or services
worker starts for each task it claims (:mod:`fleet.worker.pool`): that one
runs the one task it is given under its own id, takes stop requests from its
pool's row, dies with its pool (``PR_SET_PDEATHSIG``) and then exits.

Hand-over: a manager that gets SIGTERM exits and leaves its workers running
(see :mod:`fleet.manager`).  A static or pool worker notices that no manager
is there (its parent, the manager that spawned it, is gone and
``manager.pid`` names no live process); if none appears within
``fleet.handover_seconds`` it writes a stop request into its own row (so a
pool's per-task workers get it too) and stops exactly as on ``fleetctl
stop``: tasks are stopped as a group and end ``stopped``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import select
import signal
import socket
import time
from types import FrameType

from fleet.config import Config
from fleet.contain import Attempt
from fleet.errors import FleetError
from fleet.gpus import format_gpus, gpu_label
from fleet.home import Home
from fleet.models import Task, TaskStatus, Worker, WorkerState
from fleet.notify import Listener
from fleet.nvml import Nvml
from fleet.procs import become_subreaper, identity, pidfile_alive
from fleet.scheduler.order import QueueOrder
from fleet.store import Store
from fleet.supervise import manager_pidfile
from fleet.worker.admission import GpuAdmission, record_gpu_uuids
from fleet.worker.docker.engine import EngineProbe
from fleet.worker.launch import plan_launch
from fleet.worker.logfile import TaskLog
from fleet.worker.prepare import EXIT_NO_SPACE, NO_SPACE
from fleet.worker.process import StopCause, TaskProcess

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
CHECK_S = 0.5  # re-read stop/abort requests at least this often, wake-up or not
NO_SPACE_BACKOFF_S = 30.0  # how long a worker pulls nothing after a task found no disk space
PR_SET_PDEATHSIG = 1


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
        self.stopping: dict[str, bool] | None = None
        self.signals_at_stop = 0
        self.stop_by = ""
        self.last_beat = 0.0
        self.last_look = 0.0
        self.handover_s = config.fleet.handover_seconds
        self.manager_parent = os.getppid()  # the manager that spawned us, while it lives
        self.no_space_until = 0.0  # no disk space for environments: pull nothing until then
        self.no_space_reason = ""
        self.manager_gone_at: float | None = None

    # -- signals only record -----------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1

    def _stop_request(self) -> dict[str, bool] | None:
        """The stop asked for in the store, else one asked for by a signal."""
        request = self.worker.stop_request
        if request is None and self.signals:
            request = {"drain": False, "requeue": False, "by": "signal"}
        if request is None and self._handover_expired():
            request = {"drain": False, "requeue": False, "by": f"no manager for {self.handover_s:g}s after a hand-over"}
            try:  # in the row, so a pool's per-task workers and a later manager see it
                self.store.update_worker(self.worker.id, stop_request=request)
            except FleetError as exc:
                log.warning("worker %s: %s", self.worker.id, exc)
        if request is None:
            return None
        self.stop_by = str(request.get("by") or "fleetctl stop")
        return {k: bool(request.get(k)) for k in ("drain", "requeue")}

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

    def _refresh(self) -> None:
        """Re-read this worker's row: stop requests and the effective state the
        manager's schedule driver computed (which queues it may pull from)."""
        try:
            self.worker = self.store.get_worker(self.worker.id)
        except FleetError as exc:
            log.warning("worker %s: %s", self.worker.id, exc)

    def _pullable(self) -> list[str]:
        effective = self.worker.effective
        if effective is None:  # not computed yet: wait for it only if a schedule could say no
            return [] if self.worker.schedule else self.order.current()
        allowed = set(effective.get("pullable") or [])
        return [q for q in self.order.current() if q in allowed]

    def _waiting_state(self) -> tuple[WorkerState, str]:
        """idle (with the queues it waits on) or paused (with why and until when)."""
        effective = self.worker.effective or {}
        pullable = self._pullable()
        until = f" until {effective['next_change']}" if effective.get("next_change") else ""
        if not pullable:
            return WorkerState.PAUSED, (effective.get("reason") or "waiting for its schedule") + until
        reason = "waiting for tasks on " + ", ".join(pullable)
        if effective.get("reason") and effective["reason"] != "no schedule":
            reason += f" ({effective['reason']}{until})"
        return WorkerState.IDLE, reason

    def _set_state(self, state: WorkerState, reason: str) -> None:
        if (state, reason) == (self.worker.state, self.worker.state_reason):
            return
        try:
            self.worker = self.store.set_worker_state(self.worker.id, state, reason, self.actor, last_seen=time.time())
        except FleetError as exc:
            log.warning("worker %s: %s", self.worker.id, exc)

    def _heartbeat(self) -> None:
        now = time.time()
        if now - self.last_beat >= HEARTBEAT_S:
            self.last_beat = now
            self.store.update_worker(self.worker.id, last_seen=now)

    def _register(self) -> None:
        pid = os.getpid()
        me = identity(pid)
        start, boot = (me.ticks, me.boot) if me is not None else (None, None)
        self.store.update_worker(self.worker.id, pid=pid, pid_start=start, pid_boot=boot, last_seen=time.time())

    def _with_uuids(self, task: Task) -> Task:
        """The task with its GPU UUIDs recorded.  A pool records them for its
        per-task workers, which so never load NVML themselves."""
        return record_gpu_uuids(self.store, self.admission.nvml, task)

    def _admission(self) -> GpuAdmission:
        threshold = self.config.agent.gpu_busy_memory_mb
        return GpuAdmission(Nvml(), self.store, self.worker.host, threshold, self.worker.id)


class WorkerLoop(LoopBase):
    """A static worker, or (``task_id`` given) one task's worker under a pool."""

    def __init__(
        self,
        home: Home,
        store: Store,
        config: Config,
        worker_id: str,
        *,
        task_id: str | None = None,
        run_as: str | None = None,
        parent: int | None = None,
    ) -> None:
        super().__init__(home, store, config, worker_id)
        self.max_log = int(config.fleet.log_max_mb * 1024 * 1024)
        self.task_id = task_id
        self.run_as = run_as or worker_id
        self.parent = parent
        self.task: Task | None = None
        self.proc: TaskProcess | None = None
        self.deadline: float | None = None
        self.admission = self._admission()
        self.prepared = False  # the last task went through fleet.worker.prepare
        self._last_tail: list[str] = []
        self.engine = EngineProbe(self.worker.id) if (self.worker.options or {}).get("docker") else None

    @property
    def one_task(self) -> bool:
        return self.task_id is not None

    def _watches_manager(self) -> bool:
        return not self.one_task  # a pool's per-task worker follows its pool's row

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if self.one_task and not self._tie_to_parent():
            return 1
        listener = Listener(self.home.root, self.run_as)
        become_subreaper()
        if not self.one_task and (self.worker.options or {}).get("docker"):
            from fleet.worker.docker.cleanup import sweep  # the docker SDK only where docker mode is used

            for name in sweep(socket.gethostname(), str(self.home.root), self.store):
                log.info("worker %s: removed orphan container %s", self.worker.id, name)
        if self.one_task:
            started = self._start_given()
        else:
            self._register()
            self._set_state(*self._waiting_state())
            log.info(
                "worker %s: started (pid %d), queues %s", self.worker.id, os.getpid(), ", ".join(self.worker.queues)
            )
            started = True
        try:
            look = True
            while started:
                if look or self.signals:
                    self._refresh()
                    self._check_stop()
                if self.proc is None and (self.stopping is not None or self.one_task):
                    break
                if self.proc is None and self.stopping is None:
                    self._pull()
                self._wait(listener)
                look = listener.drain() > 0 or time.monotonic() - self.last_look >= CHECK_S
                if look:
                    self.last_look = time.monotonic()
                if self.proc is not None:
                    self._watch(look)
                self._heartbeat()
        finally:
            listener.close()
        if not self.one_task:
            self._set_state(WorkerState.DEAD, "stopped")
            log.info("worker %s: stopped", self.worker.id)
        return 0

    def _tie_to_parent(self) -> bool:
        """A pool's per-task worker dies with its pool (the manager then fails
        the task), so no task outlives the pool that accounts for its GPUs."""
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - Linux has prctl
            log.warning("worker %s: cannot tie itself to its pool (no prctl)", self.run_as)
        if self.parent is not None and os.getppid() != self.parent:
            log.error("worker %s: its pool (pid %d) is already gone", self.run_as, self.parent)
            return False
        return True

    def _start_given(self) -> bool:
        """Start the task the pool claimed for this worker; False if it is not ours."""
        assert self.task_id is not None
        try:
            task = self.store.get_task(self.task_id)
        except FleetError as exc:
            log.error("worker %s: %s", self.run_as, exc)
            return False
        if task.status != TaskStatus.IN_PROGRESS or task.worker != self.run_as:
            log.error("worker %s: task %s is %s on %s, not ours", self.run_as, task.id, task.status.value, task.worker)
            return False
        self._start(task)
        return True

    # -- the turn ----------------------------------------------------------------
    def _wait(self, listener: Listener) -> None:
        fds: list[int] = [listener.fileno()]
        timeout = self.poll
        if self.proc is not None:
            fds.extend(self.proc.waitables())
            if self.proc.returncode is not None or not self.proc.exit_is_signalled:
                timeout = min(timeout, 0.02)  # waiting for the rest of the group to go
            else:
                timeout = min(timeout, CHECK_S)
            for when in (self.proc.next_deadline(), self.deadline):
                if when is not None:
                    timeout = min(timeout, max(0.0, when - time.monotonic()))
        if self.signals:
            return
        try:
            select.select(fds, [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select
            pass

    def _check_stop(self) -> None:
        """Begin a stop asked for in the store or by a signal; a signal that
        comes after the stop began forces it (the task group is killed now).
        A pool's per-task worker reads its pool's row and gets its signals."""
        if self.stopping is None:
            request = self._stop_request()
            if request is None:
                return
            self.stopping = request
            self.signals_at_stop = self.signals
            how = "draining: no new tasks, waiting for the running one" if request["drain"] else "stopping"
            if not self.one_task:
                self._set_state(WorkerState.STOPPING, f"{how} ({self.stop_by})")
            if self.proc is not None and not request["drain"]:
                self.proc.stop(StopCause.WORKER_STOP, f"worker stopped by {self.stop_by}")
        if self.signals > self.signals_at_stop and self.proc is not None:
            self.proc.stop(StopCause.WORKER_STOP, "worker stop forced")
            self.proc.kill_now()

    def _pull(self) -> None:
        if time.monotonic() < self.no_space_until:
            self._set_state(WorkerState.IDLE, f"not pulling: {self.no_space_reason}")
            return
        problem = self.engine.problem() if self.engine is not None else None
        if problem is not None:
            self._set_state(WorkerState.IDLE, f"not pulling: {problem}")
            return
        queues = self._pullable()
        busy = self.admission.unavailable(self.worker.gpus or []) if queues else {}
        if busy:
            why = "; ".join(f"GPU {gpu_label(g)}: {text}" for g, text in sorted(busy.items()))
            drained = any(text.startswith("drained") for text in busy.values())
            self._set_state(WorkerState.IDLE, f"not pulling: GPU {'drained' if drained else 'busy'} ({why})")
            return
        self._set_state(*self._waiting_state())
        if not queues:
            return
        task = self.store.claim_next_task(self.worker, queues, self.worker.gpus or [])
        if task is None:
            return
        if task.queue is not None:
            self.order.served(task.queue)
        self._start(task)

    def _start(self, task: Task) -> None:
        if not self.one_task:
            task = self._with_uuids(task)
        self.task = task
        if not self.one_task:
            self._set_state(WorkerState.BUSY, f"running task {task.id}")
        runner = dataclasses.replace(self.worker, id=self.run_as, gpus=task.gpus) if self.one_task else self.worker
        task_log = TaskLog(self.home.task_log(task.id), self.max_log)
        task_log.note(
            f"attempt {task.attempt} on worker {runner.id} (host {runner.host}, "
            f"GPUs {format_gpus(task.gpus) or 'none'}"
            + (f" = {', '.join(task.gpu_uuids)}" if task.gpu_uuids else "")
            + ")"
        )
        try:
            launch = plan_launch(task, runner, dict(os.environ), home=self.home, config=self.config)
            attempt = Attempt(self.home.root, task.id, task.attempt)
            proc = TaskProcess(
                launch.argv,
                launch.cwd,
                launch.env,
                task_log,
                self.grace,
                contain=True,
                attempt=attempt,
                cgroup=self.config.fleet.cgroups,
                run_as=launch.run_as,
            )
            proc.start()
        except OSError as exc:
            what = task.script.command[0] if task.script.command else "the command"
            reason = f"could not start {what}: {exc.strerror or exc}"
            task_log.note(reason)
            task_log.close()
            self._record(task, TaskStatus.FAILED, None, reason)
            return
        self.store.set_task_process(task.id, proc.pid, proc.started)
        self.proc = proc
        self.deadline = time.monotonic() + task.timeout if task.timeout else None
        log.info("worker %s: task %s started (pid %d)", runner.id, task.id, proc.pid)

    def _watch(self, look: bool) -> None:
        assert self.proc is not None and self.task is not None
        proc, task = self.proc, self.task
        proc.pump()
        if proc.cause is None:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                proc.stop(StopCause.TIMEOUT, f"timeout after {task.timeout:g}s")
            elif look:
                abort = self.store.get_task(task.id).abort_requested
                fault = self.admission.faults(task.gpus)
                if fault:
                    proc.log.note(fault)
                    proc.stop(StopCause.GPU_FAULT, fault)
                elif abort:
                    proc.stop(StopCause.ABORT, abort)
        proc.tick()
        if proc.done:
            self._finish(proc, task)

    def _finish(self, proc: TaskProcess, task: Task) -> None:
        outcome = proc.finish()
        rc = outcome.returncode
        status, reason = outcome.verdict(proc.log.tail)
        self.prepared = proc.argv[1:3] == ["-m", "fleet.worker.prepare"]
        self._last_tail = list(proc.log.tail)
        proc.log.note(f"attempt {task.attempt} ended: {status.value} ({outcome.description})")
        proc.log.close()
        self.proc = None
        self.deadline = None
        self._record(task, status, rc, reason)

    def _record(self, task: Task, status: TaskStatus, rc: int | None, reason: str) -> None:
        requeue: str | None = None
        if status == TaskStatus.FAILED and rc == EXIT_NO_SPACE and self.prepared:
            # no disk space for its environment: back at the head of its queue, and this
            # worker pulls nothing for a while (the task keeps the reason meanwhile)
            requeue = "head"
            reason = next((line for line in reversed(self._last_tail) if NO_SPACE in line), reason)
            self.no_space_until = time.monotonic() + NO_SPACE_BACKOFF_S
            self.no_space_reason = reason
        elif status == TaskStatus.FAILED and task.attempt <= task.retries:
            requeue = "tail"
        elif status == TaskStatus.STOPPED and self.stopping is not None and self.stopping["requeue"]:
            requeue = "head"
        try:
            self.store.finish_task(task.id, status, exit_code=rc, reason=reason, actor=self.actor, requeue=requeue)
        except FleetError as exc:  # the task was changed behind our back; keep the worker alive
            log.error("worker %s: could not record task %s: %s", self.run_as, task.id, exc)
        log.info("worker %s: task %s %s %s", self.run_as, task.id, status.value, reason[:200])
        self.task = None
        if self.stopping is None and not self.one_task:
            self._set_state(*self._waiting_state())

    def _heartbeat(self) -> None:
        if not self.one_task:
            super()._heartbeat()
