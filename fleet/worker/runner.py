"""The task runner: one task from its claim to its recorded end.

Every way fleet runs a task on this host goes through :class:`TaskRunner`:
a static worker (:class:`fleet.worker.loop.WorkerLoop`), the per-task worker
of a dynamic pool or a services worker (:class:`fleet.worker.loop.TaskWorker`)
and ``fleetctl execute`` (:mod:`fleet.cli.cmd_exec`).  The steps, in order:

1. **claim**: take the next task from the queues (:meth:`TaskRunner.claim_next`),
   take the one a pool claimed for us (:meth:`TaskRunner.take_claimed`), or
   start one directly (:meth:`TaskRunner.start_here`);
2. **launch** (:meth:`TaskRunner.start`): its log's first line, then its
   process, as :func:`fleet.worker.launch.plan_launch` decides (plain,
   prepared or docker: a :class:`~fleet.worker.launch_outcome.LaunchKind`, decided
   once);
3. **capture and supervise** (:meth:`TaskRunner.watch`, each turn of the
   caller's loop): output into the log (on a shared store also shipped into
   it, by a thread: :mod:`fleet.worker.logship`); abort, timeout, a GPU drained for its
   health, a log that cannot be written, the caller's stop (:meth:`TaskRunner.stop`);
4. **one verdict** (:func:`verdict`): the exit, the stop's cause and the
   launcher's typed record (:mod:`fleet.worker.launch_outcome`) make the status,
   the reason and whether the task goes back into its queue;
5. **record** (:meth:`TaskRunner.flush`): its pid, then its end; while the
   store is unavailable both are kept and tried again with back-off.  The pid
   is written on the loop's next turn after the launch (within
   ``PID_WRITE_S``), or, for a task that has already ended by then, in the
   same transaction as its end.  A static worker's end waits for its next
   claim and lands in the claim's transaction (``end_with_claim``; alone
   when the worker claims nothing next): a short task costs one
   transaction, its claim, which is also the last task's end and the
   worker's busy state.  Nothing depends on the pid for safety: whoever
   finds a worker dead ends the attempt from its cgroup and marker
   (:mod:`fleet.core.contain`) before it hands the task's GPUs on.

The callers differ only in the data of a :class:`RunnerProfile`, never in
branches on who is calling.  The caller owns the loop (its wake-up socket,
its signals, its stop requests, its heartbeat); the runner never blocks
except in :meth:`TaskRunner.wait`, for at most the time the caller allows.
Every store call the runner makes is a method of :class:`TaskRunner`
(the claims, ``set_task_process``, the abort check, ``finish_task``), but
the log's chunks, which its :class:`~fleet.worker.logship.LogShipper` appends;
an attempt's end is recorded once its log is in the store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fleet.core.config import Config
from fleet.core.contain import Attempt
from fleet.core.errors import Fenced, FleetError, StoreUnavailable
from fleet.core.gpuspec import format_gpus
from fleet.core.home import Home
from fleet.core.models import ExitUsage, Runner, Task, TaskEnd, TaskStatus, Worker
from fleet.core.outcome import Outcome, StopCause
from fleet.core.tasklog import LOG_FAILED, TaskLog
from fleet.store import Store
from fleet.store.faults import Backoff
from fleet.worker.admission import GpuAdmission
from fleet.worker.envs.settings import builds_dir
from fleet.worker.launch import plan_launch
from fleet.worker.launch_outcome import LaunchKind, LaunchOutcome, outcome_path, read_outcome, remove_outcome
from fleet.worker.logship import LogShipper
from fleet.worker.prepare import one_off_builds
from fleet.worker.process import TaskProcess

log = logging.getLogger(__name__)

CHECK_S = 0.5  # re-read abort requests (and the caller its stop requests) at least this often
NO_SPACE_BACKOFF_S = 30.0  # how long a worker pulls nothing after a task found no disk space
LOG_RETRY_S = CHECK_S  # how long a worker pulls nothing after a task's first log line failed
PID_WRITE_S = 0.05  # the longest a started task's pid waits to be written (or to join its end)
FENCED_REAP_S = 5.0  # how long a fenced attempt's processes are waited for after SIGKILL


@dataclass(frozen=True)
class RunnerProfile:
    """What differs between the callers of the runner; nothing else does."""

    worker_id: str  # the worker row the task's events are recorded under (actor ``worker:<id>``)
    kind: Runner  # what runs its attempts, recorded with them (the store's ``runner`` column)
    contain: bool = True  # the attempt's cgroup, marker and strays are the task's (off: a terminal's job)
    requeue: bool = True  # retries, ``stop --requeue`` and no disk space put the task back in its queue
    log: type[TaskLog] = TaskLog  # ``fleetctl execute``: one that also copies the output to its terminal
    end_with_claim: bool = False  # a task's end waits for the caller's next claim, and lands in its transaction

    @property
    def actor(self) -> str:
        return f"worker:{self.worker_id}"


@dataclass(frozen=True)
class Verdict:
    status: TaskStatus
    reason: str
    requeue: str | None = None  # "head" or "tail" of its queue
    hold_off_s: float = 0.0  # the worker pulls nothing for this long (no disk space)


@dataclass(frozen=True)
class Ending:
    """A task's end, kept until the store has recorded it."""

    task: Task
    verdict: Verdict
    returncode: int | None
    usage: ExitUsage | None = None
    process: TaskProcess | None = None  # its pid, when not written yet: recorded with the end


def verdict(
    task: Task,
    ended: Outcome,
    tail: list[str],
    launched: LaunchOutcome | None,
    *,
    requeue: bool,
    stop_requeue: bool,
) -> Verdict:
    """How an attempt ends: from its exit, the stop's cause and the launcher's
    record (``launched``: None for a plain launch, or when the launcher left none)."""
    status, reason = ended.verdict(tail)
    if not requeue:
        return Verdict(status, reason)
    if status == TaskStatus.FAILED and ended.cause is None and launched is not None and launched.no_space:
        # no disk space for its environment: back at the head of its queue, and its
        # worker pulls nothing for a while (the task keeps the reason meanwhile)
        return Verdict(status, launched.message, "head", NO_SPACE_BACKOFF_S)
    if status == TaskStatus.FAILED and task.attempt <= task.retries:
        return Verdict(status, reason, "tail")
    if status == TaskStatus.STOPPED and ended.cause == StopCause.WORKER_STOP and stop_requeue:
        return Verdict(status, reason, "head")
    return Verdict(status, reason)


def write_through(retry: Backoff, write: Callable[[], object]) -> bool:
    """One store write, unless backing off after the store was unavailable;
    True when it landed (the store itself logs an outage, once)."""
    if not retry.ready():
        return False
    try:
        write()
    except StoreUnavailable:
        retry.failed()
        return False
    retry.ok()
    return True


def _no_hold(seconds: float, reason: str) -> None:
    """A caller that pulls nothing more (``execute``) has nothing to hold off."""


class TaskRunner:
    """One task at a time, from its claim to its recorded end (see the module docstring)."""

    def __init__(
        self,
        home: Home,
        store: Store,
        config: Config,
        profile: RunnerProfile,
        *,
        retry: Backoff | None = None,
        admission: GpuAdmission | None = None,
        hold_off: Callable[[float, str], None] = _no_hold,
    ) -> None:
        self.home = home
        self.store = store
        self.config = config
        self.profile = profile
        self.retry = retry or Backoff()  # shared with the caller's own writes
        self.admission = admission  # None: GPU health is not watched
        self.hold_off = hold_off  # told when the caller should pull nothing for a while, and why
        self.grace = config.fleet.stop_grace_seconds
        self.max_log = int(config.fleet.log_max_mb * 1024 * 1024)
        self.task: Task | None = None
        self.proc: TaskProcess | None = None
        self.kind = LaunchKind.PLAIN
        self.deadline: float | None = None
        self.pid_pending = False  # the running task's pid is not in the store yet
        self.stop_requeue = False  # the caller's stop asked for the task back in its queue
        self.ending: Ending | None = None  # the last task's end, until the store has it
        self.last: Ending | None = None  # the last task's end, once recorded
        self.ship: LogShipper | None = None  # the task's log into a shared store (fleet.worker.logship)
        self._current: Task | None = None  # the running task's row as last read (abort, ownership)

    @property
    def free(self) -> bool:
        """No task running and no end waiting for the store."""
        return self.proc is None and self.ending is None

    # -- claim ---------------------------------------------------------------------
    def claim_next(self, worker: Worker, queues: list[str], busy: str | None = None) -> Task | None:
        """The next task of ``queues`` for ``worker`` (a static worker), which
        becomes busy with the reason ``busy`` in the same transaction, as the
        last task's end (``end_with_claim``) is recorded; None when there is
        none or the store is unavailable (backing off: the end is kept)."""
        ending = self.ending
        if not self.retry.ready() or (ending is not None and not self._log_shipped()):
            return None
        try:
            end = self._end_record(ending) if ending is not None else None
            task = self.store.claim_next_task(worker, queues, worker.gpus or [], busy, end)
        except StoreUnavailable:
            self.retry.failed()
            return None
        except FleetError as exc:  # the end was refused (the task changed behind our back): nothing was written
            assert ending is not None
            self._landed(ending, exc)
            return None
        self.retry.ok()
        if ending is not None:
            self._landed(ending)
        return task

    def take_claimed(self, task_id: str, run_as: str) -> Task | None:
        """The task a pool claimed for its per-task worker ``run_as``; None if it is not ours."""
        try:
            task = self.store.get_task(task_id)
        except FleetError as exc:
            log.error("worker %s: %s", run_as, exc)
            return None
        if task.status != TaskStatus.IN_PROGRESS or task.worker != run_as:
            log.error("worker %s: task %s is %s on %s, not ours", run_as, task.id, task.status.value, task.worker)
            return None
        return task

    def start_here(self, task_id: str, worker: Worker, gpus: list[int]) -> Task:
        """Start ``task_id`` directly on ``worker`` (``execute``), outside any queue pull."""
        return self.store.start_task(task_id, worker, gpus, self.profile.actor, self.profile.kind)

    # -- launch --------------------------------------------------------------------
    def start(self, task: Task, worker: Worker) -> None:
        """Launch ``task`` as ``worker`` (the id and GPUs it runs under).  A
        task that cannot be started, or whose log cannot be written, ends here."""
        self.task = task
        self.stop_requeue = False
        task_log = self._open_log(task, worker)
        if task_log is None:
            return
        if task.attempt > 1:  # a record the last attempt left for the next claimer (no disk space)
            remove_outcome(outcome_path(self.home.root, task.id, task.attempt - 1))
        try:
            proc = self._spawn(task, worker, task_log)
        except OSError as exc:
            what = task.script.command[0] if task.script.command else "the command"
            reason = f"could not start {what}: {exc.strerror or exc}"
            task_log.note(reason)
            task_log.close()
            self._record(task, Verdict(TaskStatus.FAILED, reason))
            return
        self.proc = proc
        self.deadline = time.monotonic() + task.timeout if task.timeout else None
        self.pid_pending = True  # written on the next turn, or with its end (see the module docstring)
        log.info("worker %s: task %s started (pid %d)", worker.id, task.id, proc.pid)

    def _open_log(self, task: Task, worker: Worker) -> TaskLog | None:
        """The task's log with its attempt's first line; None when that cannot
        be written (the task is not run: back at the head of its queue)."""
        path = self.home.task_log(task.id)
        ship = LogShipper.prepare(self.store, task, path, self.max_log)
        try:
            task_log = self.profile.log(path, self.max_log)
        except OSError as exc:
            self._record(task, Verdict(TaskStatus.FAILED, f"{LOG_FAILED}: {exc.strerror or exc}", "head", LOG_RETRY_S))
            return None
        uuids = f" = {', '.join(task.gpu_uuids)}" if task.gpu_uuids else ""
        gpus = format_gpus(task.gpus) or "none"
        task_log.note(f"attempt {task.attempt} on worker {worker.id} (host {worker.host}, GPUs {gpus}{uuids})")
        if task_log.error is None:
            if ship is not None:
                ship.start(task_log)
            self.ship = ship
            return task_log
        task_log.close()  # the disk filled up since the claim
        self._record(task, Verdict(TaskStatus.FAILED, task_log.error, "head", LOG_RETRY_S))
        return None

    def _spawn(self, task: Task, worker: Worker, task_log: TaskLog) -> TaskProcess:
        """The task's process, as :func:`~fleet.worker.launch.plan_launch` says; ``OSError`` when it cannot start."""
        contain = self.profile.contain
        launch = plan_launch(task, worker, dict(os.environ), home=self.home, config=self.config)
        if launch.kind == LaunchKind.PREPARED:
            self._prune_builds(task)
        proc = TaskProcess(
            launch.argv,
            launch.cwd,
            launch.env,
            task_log,
            self.grace,
            contain=contain,
            attempt=Attempt(self.home.root, task.id, task.attempt) if contain else None,
            cgroup=contain and self.config.fleet.cgroups,
            run_as=launch.run_as,
            become=launch.become,
        )
        proc.start()
        self.kind = launch.kind
        return proc

    def _prune_builds(self, task: Task) -> None:
        """Remove the one-off environments of tasks no longer running (a task
        whose requirements cannot be cached builds its own), before ``task``
        is prepared; one of a running task, or of one the store cannot name
        now, is kept."""
        for entry in one_off_builds(builds_dir(self.home, self.config.agent), task.id):
            try:
                running = self.store.get_task(entry.name).status == TaskStatus.IN_PROGRESS
            except StoreUnavailable:
                return
            except FleetError:  # no such task (any more)
                running = False
            if not running:
                shutil.rmtree(entry, ignore_errors=True)

    # -- supervise -----------------------------------------------------------------
    def wait(self, fds: Sequence[int], limit: float) -> None:
        """Wait for the task (or ``fds``, the caller's) for at most ``limit`` seconds."""
        waitables = list(fds)
        timeout = limit
        if self.pid_pending or self.ending is not None:  # writes that must land: try again when due
            timeout = min(timeout, max(self.retry.remaining(), PID_WRITE_S))
        proc = self.proc
        if proc is not None:
            waitables.extend(proc.waitables())
            if proc.returncode is not None or not proc.exit_is_signalled:
                timeout = min(timeout, 0.02)  # waiting for the rest of the group to go
            else:
                timeout = min(timeout, CHECK_S)
            for when in (proc.next_deadline(), self.deadline):
                if when is not None:
                    timeout = min(timeout, max(0.0, when - time.monotonic()))
        try:
            select.select(waitables, [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select
            pass

    def stop(self, cause: StopCause, detail: str, *, requeue: bool = False) -> None:
        """Stop the running task (SIGTERM to its group, SIGKILL after the grace)."""
        if self.proc is not None:
            self.stop_requeue = self.stop_requeue or requeue
            self.proc.stop(cause, detail)

    def kill_now(self) -> None:
        if self.proc is not None:
            self.proc.kill_now()

    def watch(self, look: bool) -> None:
        """Capture the task's output and enforce its limits; ``look``: also
        read its abort request and its GPUs' health (the store)."""
        proc, task = self.proc, self.task
        if proc is None or task is None:
            return
        proc.pump()
        if self.ship is not None:
            self.ship.poke()
        if look and self._taken(task):
            return
        if proc.cause is None:
            if proc.log.error is not None:
                log.warning("worker %s: task %s: %s; stopping it", task.worker, task.id, proc.log.error)
                proc.stop(StopCause.LOG, proc.log.error)
            elif self.deadline is not None and time.monotonic() >= self.deadline:
                proc.stop(StopCause.TIMEOUT, f"timeout after {task.timeout:g}s")
            elif look:
                self._look(proc, task)
        proc.tick()
        if proc.done:
            self._finish(proc, task)

    def _taken(self, task: Task) -> bool:
        """Whether the running attempt was taken from this host (declared lost
        while it was frozen or cut off): then it is killed now, and nothing of
        it is recorded.  A read, on the turns that look at the store."""
        try:
            now = self.store.get_task(task.id)
        except FleetError:  # unavailable, or gone: the writes are fenced anyway
            self._current = None
            return False
        self._current = now
        if now.status == TaskStatus.IN_PROGRESS and now.attempt == task.attempt:
            return False
        self.fenced(
            Fenced(
                f"task {task.id}: attempt {task.attempt} no longer owns it ({now.status.value}: {now.status_reason})"
            )
        )
        return True

    def fenced(self, exc: Fenced) -> None:
        """The store refused a write of this attempt, or the attempt is no longer
        the task's (see :meth:`_taken`): kill every process of it at once and
        drop what it would have recorded."""
        proc, task = self.proc, self.task
        log.error("worker %s: %s; killing it, recording nothing", self.profile.worker_id, exc.message)
        if self.ship is not None:
            self.ship.abandon(f"attempt fenced: {exc.message}")
            self.ship = None
        if proc is not None:
            proc.kill_now()
            if proc.attempt is not None:
                proc.attempt.end()
            deadline = time.monotonic() + FENCED_REAP_S
            while not proc.done and time.monotonic() < deadline:
                proc.tick()
                time.sleep(0.01)
            proc.finish()
            attempt = task.attempt if task is not None else "?"
            proc.log.note(f"attempt {attempt} fenced: {exc.message}")
            proc.log.close()
        self.proc = None
        self.task = None
        self.deadline = None
        self.pid_pending = False
        self.ending = None

    def _look(self, proc: TaskProcess, task: Task) -> None:
        current = self._current
        abort = current.abort_requested if current is not None else None
        fault = self.admission.faults(task.gpus) if self.admission is not None else ""
        if fault:
            proc.log.note(fault)
            proc.stop(StopCause.GPU_FAULT, fault)
        elif abort:
            proc.stop(StopCause.ABORT, abort)

    # -- verdict and record ----------------------------------------------------------
    def _finish(self, proc: TaskProcess, task: Task) -> None:
        ended = proc.finish()
        record = outcome_path(self.home.root, task.id, task.attempt)
        launched = read_outcome(record) if self.kind != LaunchKind.PLAIN else None
        if launched is not None and launched.environment is not None:  # the preparing step's (prepfast)
            env = launched.environment
            # the facts are lost, the verdict is not (a fenced attempt's end is refused too)
            with contextlib.suppress(StoreUnavailable, Fenced):
                self.store.record_environment(
                    task.id, env.cached, env.frozen, env.manager, env.python, attempt=task.attempt
                )
        judged = verdict(
            task, ended, proc.log.tail, launched, requeue=self.profile.requeue, stop_requeue=self.stop_requeue
        )
        proc.log.note(f"attempt {task.attempt} ended: {judged.status.value} ({ended.description})")
        proc.log.close()
        if launched is not None and not judged.hold_off_s:
            remove_outcome(record)
        unwritten = proc if self.pid_pending else None
        self.proc = None
        self.deadline = None
        self.pid_pending = False
        self._record(task, judged, ended.returncode, ended.usage, unwritten)

    def _record(
        self,
        task: Task,
        judged: Verdict,
        returncode: int | None = None,
        usage: ExitUsage | None = None,
        process: TaskProcess | None = None,
    ) -> None:
        if judged.hold_off_s:
            self.hold_off(judged.hold_off_s, judged.reason)
        self.ending = Ending(task, judged, returncode, usage, process)
        if self.profile.end_with_claim:  # recorded by the caller's next claim, or its flush
            return
        if not self._land(self.ending) and self.ship is None:  # (not: its log is still being shipped)
            log.warning(
                "worker %s: task %s ended %s; keeping its end until the store takes it",
                task.worker,
                task.id,
                judged.status.value,
            )

    def flush(self) -> None:
        """The writes that must land, tried again (with back-off) until they do:
        the running task's pid, then the last task's end."""
        proc, task = self.proc, self.task
        if self.pid_pending and proc is not None and task is not None:
            task_id, attempt, pid, started = task.id, task.attempt, proc.pid, proc.started
            try:
                if write_through(self.retry, lambda: self.store.set_task_process(task_id, pid, started, attempt)):
                    self.pid_pending = False
            except Fenced as exc:
                self.fenced(exc)
                return
        if self.ending is not None:
            self._land(self.ending)

    def _land(self, ending: Ending) -> bool:
        """Record a task's end; while the store is unavailable it is kept (and
        the caller claims nothing) and False is returned."""
        if not self._log_shipped():
            return False
        if not self.retry.ready():
            return False
        try:
            end = self._end_record(ending)
            self.store.finish_task(
                end.task_id,
                end.status,
                exit_code=end.exit_code,
                reason=end.reason,
                actor=end.actor,
                requeue=end.requeue,
                usage=end.usage,
                pid=end.pid,
                started=end.started,
                attempt=end.attempt,
            )
        except StoreUnavailable:
            self.retry.failed()
            return False
        except Fenced as exc:  # taken from this host while it was away: its end is not ours to record
            log.error("worker %s: %s", ending.task.worker, exc.message)
            self.ending = None
            self.task = None
            return True
        except FleetError as exc:  # the task was changed behind our back; keep the worker alive
            self._landed(ending, exc)
        else:
            self.retry.ok()
            self._landed(ending)
        return True

    def _end_record(self, ending: Ending) -> TaskEnd:
        """The store's record of ``ending`` (with the pid, when it was not written yet)."""
        judged, proc = ending.verdict, ending.process
        return TaskEnd(
            ending.task.id,
            judged.status,
            ending.returncode,
            judged.reason,
            self.profile.actor,
            judged.requeue,
            ending.usage,
            proc.pid if proc is not None else None,
            proc.started if proc is not None else None,
            ending.task.attempt,  # fenced: refused once the attempt is no longer the task's
        )

    def _log_shipped(self) -> bool:
        """Whether the ended task's log is all in the store (or is not shipped):
        its end is recorded only then, so whoever sees it ended has the whole log."""
        if self.ship is not None and not self.ship.finish():
            return False
        self.ship = None
        return True

    def _landed(self, ending: Ending, refused: FleetError | None = None) -> None:
        """The store has ``ending`` (or refused it, said in the log): the runner is free of it."""
        task, judged = ending.task, ending.verdict
        if refused is not None:
            log.error("worker %s: could not record task %s: %s", task.worker, task.id, refused)
        log.info("worker %s: task %s %s %s", task.worker, task.id, judged.status.value, judged.reason[:200])
        self.last = ending
        self.ending = None
        self.task = None
