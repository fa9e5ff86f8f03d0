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
import select
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType

from fleet.config import Config
from fleet.contain import Attempt
from fleet.errors import FleetError, StoreUnavailable
from fleet.gpus import format_gpus, gpu_label
from fleet.home import Home, manager_pidfile
from fleet.models import ExitUsage, StopRequest, Task, TaskStatus, Worker, WorkerState
from fleet.notify import Listener
from fleet.nvml import Nvml
from fleet.procs import become_subreaper, identity, pidfile_alive
from fleet.scheduler.order import QueueOrder
from fleet.store import Store
from fleet.store.faults import Backoff
from fleet.worker.admission import GpuAdmission, record_gpu_uuids
from fleet.worker.docker.engine import EngineProbe
from fleet.worker.launch import plan_launch
from fleet.worker.logfile import LOG_FAILED, TaskLog, no_room
from fleet.worker.prepare import EXIT_NO_SPACE, NO_SPACE
from fleet.worker.process import StopCause, TaskProcess

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
CHECK_S = 0.5  # re-read stop/abort requests at least this often, wake-up or not
NO_SPACE_BACKOFF_S = 30.0  # how long a worker pulls nothing after a task found no disk space
PR_SET_PDEATHSIG = 1


@dataclasses.dataclass
class Ending:
    """A task's end, kept until the store has recorded it."""

    task: Task
    status: TaskStatus
    returncode: int | None
    reason: str
    requeue: str | None
    usage: ExitUsage | None = None


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
        """One store write, unless backing off after the store was unavailable;
        True when it landed (the store itself logs an outage, once)."""
        if not self.retry.ready():
            return False
        try:
            write()
        except StoreUnavailable:
            self.retry.failed()
            return False
        self.retry.ok()
        return True

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
        self.no_space_until = max(self.no_space_until, time.monotonic() + 1.0)
        self.no_space_reason = why
        return False

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
        self.pid_pending = False  # the running task's pid is not in the store yet
        self.ending: Ending | None = None  # the last task's end, until the store has it
        self.deadline: float | None = None
        self.admission = self._admission()
        self.prepared = False  # the last task went through fleet.worker.prepare
        self._last_tail: list[str] = []
        self.engine = EngineProbe(self.worker.id) if self.worker.options.docker is not None else None

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
        if not self.one_task and self.worker.options.docker is not None:
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
                self._flush()
                free = self.proc is None and self.ending is None
                if free and (self.stopping is not None or self.one_task):
                    break
                if free and self.stopping is None:
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
        if self.pid_pending or self.ending is not None:  # writes that must land: try again when due
            timeout = min(timeout, max(self.retry.remaining(), 0.05))
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
            how = "draining: no new tasks, waiting for the running one" if request.drain else "stopping"
            if not self.one_task:
                self._set_state(WorkerState.STOPPING, f"{how} ({self.stop_by})")
            if self.proc is not None and not request.drain:
                self.proc.stop(StopCause.WORKER_STOP, f"worker stopped by {self.stop_by}")
        if self.signals > self.signals_at_stop and self.proc is not None:
            self.proc.stop(StopCause.WORKER_STOP, "worker stop forced")
            self.proc.kill_now()

    def _pull(self) -> None:
        if not self.retry.ready():
            return
        if time.monotonic() < self.no_space_until or not self._room_for_logs():
            self._set_state(WorkerState.IDLE, f"not pulling: {self.no_space_reason}")
            return
        problem = self.engine.problem() if self.engine is not None else None
        if problem is not None:
            self._set_state(WorkerState.IDLE, f"not pulling: {problem}")
            return
        queues = self._pullable()
        try:
            busy = self.admission.unavailable(self.worker.gpus or []) if queues else {}
        except StoreUnavailable:
            self.retry.failed()
            return
        if busy:
            why = "; ".join(f"GPU {gpu_label(g)}: {text}" for g, text in sorted(busy.items()))
            drained = any(text.startswith("drained") for text in busy.values())
            self._set_state(WorkerState.IDLE, f"not pulling: GPU {'drained' if drained else 'busy'} ({why})")
            return
        self._set_state(*self._waiting_state())
        if not queues:
            return
        try:
            task = self.store.claim_next_task(self.worker, queues, self.worker.gpus or [])
        except StoreUnavailable:
            self.retry.failed()
            return
        if task is None:
            return
        self.retry.ok()
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
        try:
            task_log = TaskLog(self.home.task_log(task.id), self.max_log)
        except OSError as exc:
            self._record(task, TaskStatus.FAILED, None, f"{LOG_FAILED}: {exc.strerror or exc}", head=True)
            return
        task_log.note(
            f"attempt {task.attempt} on worker {runner.id} (host {runner.host}, "
            f"GPUs {format_gpus(task.gpus) or 'none'}"
            + (f" = {', '.join(task.gpu_uuids)}" if task.gpu_uuids else "")
            + ")"
        )
        if task_log.error is not None:  # the disk filled up since the claim: not run, back at the head
            task_log.close()
            self._record(task, TaskStatus.FAILED, None, task_log.error, head=True)
            return
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
        self.proc = proc
        self.deadline = time.monotonic() + task.timeout if task.timeout else None
        self.pid_pending = True
        self._flush()
        log.info("worker %s: task %s started (pid %d)", runner.id, task.id, proc.pid)

    def _flush(self) -> None:
        """The writes that must land, tried again (with back-off) until they do:
        the running task's pid, then the last task's end."""
        proc, task = self.proc, self.task
        if self.pid_pending and proc is not None and task is not None:
            if self._write(lambda: self.store.set_task_process(task.id, proc.pid, proc.started)):
                self.pid_pending = False
        if self.ending is not None:
            self._land(self.ending)

    def _watch(self, look: bool) -> None:
        assert self.proc is not None and self.task is not None
        proc, task = self.proc, self.task
        proc.pump()
        if proc.cause is None:
            if proc.log.error is not None:
                log.warning("worker %s: task %s: %s; stopping it", self.run_as, task.id, proc.log.error)
                proc.stop(StopCause.LOG, proc.log.error)
            elif self.deadline is not None and time.monotonic() >= self.deadline:
                proc.stop(StopCause.TIMEOUT, f"timeout after {task.timeout:g}s")
            elif look:
                try:
                    abort = self.store.get_task(task.id).abort_requested
                except StoreUnavailable:
                    abort = None
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
        self.pid_pending = False
        self._record(task, status, rc, reason, usage=outcome.usage)

    def _record(
        self,
        task: Task,
        status: TaskStatus,
        rc: int | None,
        reason: str,
        head: bool = False,
        usage: ExitUsage | None = None,
    ) -> None:
        """``head``: the task was never run (no room for its log): back at the head of its queue."""
        requeue: str | None = None
        if head:
            requeue = "head"
            self.no_space_until = time.monotonic() + CHECK_S
            self.no_space_reason = reason
        elif status == TaskStatus.FAILED and rc == EXIT_NO_SPACE and self.prepared:
            # no disk space for its environment: back at the head of its queue, and this
            # worker pulls nothing for a while (the task keeps the reason meanwhile)
            requeue = "head"
            reason = next((line for line in reversed(self._last_tail) if NO_SPACE in line), reason)
            self.no_space_until = time.monotonic() + NO_SPACE_BACKOFF_S
            self.no_space_reason = reason
        elif status == TaskStatus.FAILED and task.attempt <= task.retries:
            requeue = "tail"
        elif status == TaskStatus.STOPPED and self.stopping is not None and self.stopping.requeue:
            requeue = "head"
        self.ending = Ending(task, status, rc, reason, requeue, usage)
        if not self._land(self.ending):
            log.warning(
                "worker %s: task %s ended %s; keeping its end until the store takes it",
                self.run_as,
                task.id,
                status.value,
            )

    def _land(self, ending: Ending) -> bool:
        """Record a task's end; while the store is unavailable it is kept (and
        the worker claims nothing) and False is returned."""
        task = ending.task
        if not self.retry.ready():
            return False
        try:
            self.store.finish_task(
                task.id,
                ending.status,
                exit_code=ending.returncode,
                reason=ending.reason,
                actor=self.actor,
                requeue=ending.requeue,
                usage=ending.usage,
            )
        except StoreUnavailable:
            self.retry.failed()
            return False
        except FleetError as exc:  # the task was changed behind our back; keep the worker alive
            log.error("worker %s: could not record task %s: %s", self.run_as, task.id, exc)
        else:
            self.retry.ok()
        log.info("worker %s: task %s %s %s", self.run_as, task.id, ending.status.value, ending.reason[:200])
        self.ending = None
        self.task = None
        if self.stopping is None and not self.one_task:
            self._set_state(*self._waiting_state())
        return True

    def _heartbeat(self) -> None:
        if not self.one_task:
            super()._heartbeat()
