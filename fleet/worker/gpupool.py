"""A dynamic GPU pool or a services worker: many tasks at once, one worker
subprocess per task.

The pool process decides and accounts; it runs no task itself.  For each
task it claims (``Store.claim_task``, atomic) it starts a per-task worker,
``python -m fleet.worker --task ID --run-as <host>:gpu<list>`` (a service:
``<host>:service:<task id>``), which runs that one task exactly as a static
worker would (abort, timeout, retries, log capture, stop and drain) and
records its end.  The per-task worker stays in the pool's process group and
dies with the pool (``PR_SET_PDEATHSIG``), so no task outlives the process
that accounts for its GPUs.

GPUs are accounted from local truth, never from heartbeats: a task's GPUs
are the pool's from the claim until its per-task worker has exited, which
it does only once the task's whole process group is gone.  The pool waits on
a ``pidfd`` per worker, so it hears of an exit at once.  What ``kill -9``
does:

- of a per-task worker: the pool sees it exit with the task still
  ``in_progress``; it SIGKILLs the task's process group, anything the dead
  worker left behind (now re-parented to the pool, a child subreaper) and
  every process of the attempt (:mod:`fleet.core.contain`: its cgroup, its
  marker), waits until none is left, then records the task ``failed``
  (``worker died``; queued again if it has retries left) and frees its GPUs,
  all within a turn or two of the loop.
- of the pool: its per-task workers die with it (and their tasks' main
  processes with them); the manager sees the pool die, kills every process
  of every task it owned and then fails them (``worker died``), and restarts
  the pool, which starts with every GPU free.
- of the manager: nothing; the pool and its tasks go on and record results.

Each turn the pool re-reads its row (stop requests, working hours), reaps
exits, then fills free GPUs: it peeks at each pullable queue's head, asks the
pure :func:`~fleet.policy.allocate.allocate` what to start and what to
reserve, claims and starts, and repeats while it starts something.  What it
decided (running tasks, reservations, busy GPUs, why each queue waits) is
written to the worker row's ``pool`` field for ``status`` and the API, and
summed up in ``state_reason``.  A services worker is the same loop without
GPUs, capped at ``--services-mode MAX``.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import psutil

from fleet.core import wakeups
from fleet.core.config import Config
from fleet.core.contain import Attempt
from fleet.core.errors import FleetError, StoreUnavailable
from fleet.core.gpuspec import format_gpus, gpu_label
from fleet.core.home import Home
from fleet.core.models import GpuReservation, Task, TaskStatus, WorkerMode, WorkerState
from fleet.core.procs import become_subreaper, describe_exit, group_alive, is_same_process, reap_orphans, signal_group
from fleet.core.wakeups import Listener
from fleet.policy.allocate import Decision, Head, PoolChild, PoolState, Reservation, allocate
from fleet.policy.pool_rules import services_max, task_worker_id, too_large_reason, worker_specs
from fleet.store import Store
from fleet.worker.launch_outcome import outcome_path, read_outcome
from fleet.worker.loop_base import LoopBase
from fleet.worker.orphans import fail_orphaned
from fleet.worker.runner import CHECK_S, NO_SPACE_BACKOFF_S

log = logging.getLogger(__name__)

MAX_ROUNDS = 64  # allocation rounds per turn (each starts at least one task)


@dataclass
class Child:
    """One task's worker subprocess and what it holds."""

    task: Task  # as claimed
    queue: str
    run_as: str
    gpus: tuple[int, ...]
    popen: subprocess.Popen[bytes] | None
    pidfd: int | None = None
    exited: str | None = None  # how the worker process ended
    kill_groups: tuple[int, ...] = ()  # groups being killed after the worker died
    ending: bool = False  # the worker died: its task's processes are being killed; GPUs held until none is left
    died: str = ""  # the task's end reason when its worker died
    checked: bool = False  # after its exit: whether it left its task running (read from the store)

    @property
    def pid(self) -> int:
        return self.popen.pid if self.popen is not None else 0


class PoolLoop(LoopBase):
    def __init__(self, home: Home, store: Store, config: Config, worker_id: str) -> None:
        super().__init__(home, store, config, worker_id)
        self.services = self.worker.mode == WorkerMode.SERVICES
        self.specs = {spec.name: spec for spec in worker_specs(self.worker)}
        self.pool = list(self.worker.gpus or [])
        self.limit = services_max(self.worker) if self.services else None
        self.children: dict[str, Child] = {}
        self.forwarded = 0
        self.admission = self._admission()
        self.topology: dict[tuple[int, int], int] | None = None
        self.decision = Decision()
        self.busy: dict[int, str] = {}
        self.published: PoolState | None = None
        self.recovered = False  # the previous pool's tasks are recorded failed
        self.held: GpuReservation | None = None  # this pool's reservation, as the store has it

    # -- the loop ----------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        listener = Listener(self.home.root, self.worker.id)
        become_subreaper()
        self._register()
        if not self.services and self.admission.on:
            self.topology = self.admission.nvml.topology(self.pool)
        what = f"services (max {self.limit or 'unlimited'})" if self.services else f"GPUs {format_gpus(self.pool)}"
        log.info(
            "worker %s: pool started (pid %d), %s, queues %s",
            self.worker.id,
            os.getpid(),
            what,
            " ".join(s.text() for s in self.specs.values()),
        )
        try:
            look = True
            while True:
                self._look(look)
                self._reap()
                if self.stopping is not None and not self.children:
                    break
                if self.stopping is None and self._recovered():
                    self._fill()
                elif self.stopping is not None:
                    self._release("its pool is stopping")
                self._show()
                self._wait(listener)
                look = listener.drain() > 0 or time.monotonic() - self.last_look >= CHECK_S
                if look:
                    self.last_look = time.monotonic()
                self._heartbeat()
        finally:
            listener.close()
        self._write(lambda: self.store.update_worker(self.worker.id, pool=None))
        self._set_state(WorkerState.DEAD, "stopped")
        log.info("worker %s: stopped", self.worker.id)
        return 0

    def _wait(self, listener: Listener) -> None:
        fds = [listener.fileno()]
        timeout = self.poll
        for child in self.children.values():
            if child.ending or (child.exited is None and child.pidfd is None):
                timeout = min(timeout, 0.02 if child.ending else CHECK_S)
            elif child.pidfd is not None and child.exited is None:
                fds.append(child.pidfd)
        if self.children:
            timeout = min(timeout, CHECK_S)
        if self.signals > self.forwarded:
            return
        try:
            select.select(fds, [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select
            pass

    def _check_stop(self) -> None:
        """A stop from the store reaches the per-task workers through this
        row (they re-read it when woken); each signal the pool gets is passed
        on to them, so a second one forces their tasks down too."""
        if self.stopping is None:
            request = self._stop_request()
            if request is not None:
                self.stopping = request
                how = "draining: no new tasks, waiting for the running ones" if request.drain else "stopping"
                self._set_state(WorkerState.STOPPING, f"{how} ({self.stop_by})")
                wakeups.wake(self.home.root, [c.run_as for c in self.children.values()])
        while self.forwarded < self.signals:
            self.forwarded += 1
            for child in self.children.values():
                if child.exited is None and child.popen is not None:
                    child.popen.send_signal(signal.SIGTERM)

    # -- exits ---------------------------------------------------------------------
    def _reap(self) -> None:
        """Exits of task workers.  A child's GPUs stay held until what it
        left is recorded: while the store is unavailable, that waits."""
        for key, child in list(self.children.items()):
            if child.exited is None and child.popen is not None:
                rc = child.popen.poll()
                if rc is not None:
                    child.exited = describe_exit(rc)
                    if child.pidfd is not None:
                        os.close(child.pidfd)
                        child.pidfd = None
            if child.exited is not None and not child.checked:
                if not self._write(partial(self._worker_exited, child)):
                    continue
                child.checked = True
            if child.exited is not None:
                if child.ending:
                    self._kill_left(child)
                if not child.ending:
                    if child.died:
                        killed: list[bool] = []
                        if not self._write(partial(self._fail_dead, child, killed)):
                            continue  # the store cannot take it yet: its GPUs stay held, tried again next turn
                        if not killed[0]:
                            child.ending = True  # something of it would not die: keep its GPUs, kill again next turn
                            continue
                    del self.children[key]
                    log.info("worker %s: GPUs %s free (task %s)", self.worker.id, format_gpus(list(child.gpus)), key)
        reap_orphans({c.pid for c in self.children.values() if c.exited is None and c.pid})

    def _fail_dead(self, child: Child, killed: list[bool]) -> None:
        """Kill what is left of a dead per-task worker's task and record it
        (:func:`fleet.worker.orphans.fail_orphaned`); appends whether none is left."""
        killed.append(fail_orphaned(self.home.root, self.store, child.task, child.died, self.actor))

    def _backing_off(self, heads: list[Task]) -> bool:
        """A head task its per-task worker just put back for lack of disk space for
        its environment: pull nothing for a while (from any queue: the disk is
        shared) rather than claim it again at once.  Read from the launch record
        its last attempt left (:mod:`fleet.worker.launch_outcome`), so it holds however
        the worker's exit and the requeue interleave."""
        now = time.time()
        for task in heads:
            if not task.attempt or task.queued_at is None or now - task.queued_at >= NO_SPACE_BACKOFF_S:
                continue  # only a task put back within the back-off can hold the pool off
            launched = read_outcome(outcome_path(self.home.root, task.id, task.attempt))
            if launched is not None and launched.no_space:
                self.hold_off(NO_SPACE_BACKOFF_S - (now - task.queued_at), launched.message)
        return time.monotonic() < self.no_space_until

    def _worker_exited(self, child: Child) -> None:
        """A per-task worker ended.  Normally it recorded its task first; if the
        task is still running under it, the worker died: kill what is left."""
        try:
            task = self.store.get_task(child.task.id)
        except StoreUnavailable:
            raise
        except FleetError as exc:
            log.error("worker %s: %s", self.worker.id, exc)
            return
        ours = task.status == TaskStatus.IN_PROGRESS and task.attempt == child.task.attempt
        if not (ours and task.worker == child.run_as):
            return
        log.warning("worker %s: task worker %s died (%s)", self.worker.id, child.run_as, child.exited)
        child.task = task
        child.died = f"worker died ({child.run_as} {child.exited})"
        groups = {task.pid} if task.pid and is_same_process(task.pid, task.pid_start, task.pid_boot) else set()
        groups |= set(self._orphans())  # the dead worker's task, re-parented to us, even before it was recorded
        child.kill_groups = tuple(sorted(groups))
        child.ending = True
        self._kill_left(child)

    def _orphans(self) -> list[int]:
        """Process groups of our children that are not our task workers: left
        behind by a task worker that died (we are their subreaper)."""
        workers = {c.pid for c in self.children.values()}
        out = []
        try:
            for proc in psutil.Process().children():
                if proc.pid not in workers:
                    out.append(os.getpgid(proc.pid))
        except (psutil.Error, OSError):
            pass
        return out

    def _kill_left(self, child: Child) -> None:
        """One round of killing what is left of a dead worker's task; ``ending``
        stays set until nothing is (checked again on the next turn, never waited for here)."""
        left = tuple(g for g in child.kill_groups if group_alive(g))
        for group in left:
            signal_group(group, signal.SIGKILL)
        attempt = Attempt(self.home.root, child.task.id, child.task.attempt)
        attempt.kill()
        reap_orphans({c.pid for c in self.children.values() if c.exited is None and c.pid})
        child.kill_groups = tuple(g for g in left if group_alive(g))
        child.ending = bool(child.kill_groups) or bool(attempt.members())

    def _recovered(self) -> bool:
        """True once the previous pool's tasks are recorded (tried again with
        back-off while the store is unavailable; nothing is claimed before)."""
        if not self.recovered:
            self.recovered = self._write(self._recover)
        return self.recovered

    def _recover(self) -> None:
        """Tasks still recorded as running for this pool from before it started:
        their workers died with the previous pool process.  Their GPUs stay
        held (as children being ended) until no process of theirs is left."""
        for task in self.store.running_tasks(owner=self.worker.id):
            log.warning("worker %s: task %s was left running by a previous pool; failing it", self.worker.id, task.id)
            child = Child(task, task.queue or "", task.worker or "", tuple(task.gpus), None, exited="lost")
            child.died = "worker died (its pool restarted)"
            child.ending = True
            self.children[task.id] = child

    # -- filling free GPUs ----------------------------------------------------------
    def _fill(self) -> None:
        """Claim and start what fits (skipped, with back-off, while the store is unavailable)."""
        if self.retry.ready():
            try:
                self._fill_now()
                if not self.services and not self.decision.reservations:
                    self._release("no request waits for its GPUs")  # paused, backing off, nothing queued
            except StoreUnavailable:
                self.retry.failed()

    def _fill_now(self) -> None:
        if not self._room_for_logs():
            self.decision = Decision()
            return
        queues = [q for q in self._pullable() if q in self.specs]
        self.decision = Decision()
        self.busy = {}
        if not queues or time.monotonic() < self.no_space_until:
            return
        if self.services:
            self._fill_services(queues)
            return
        in_use = {g for c in self.children.values() for g in c.gpus}
        self.busy = self.admission.unavailable([g for g in self.pool if g not in in_use])
        specs = [self.specs[q] for q in queues]
        limits = {s.name: (len(self.pool) if s.own_count else None) for s in specs}
        others = self._reserved_elsewhere()
        for _ in range(MAX_ROUNDS):
            in_use = {g for c in self.children.values() for g in c.gpus}
            heads, peeked = self._heads(limits, others)
            if self._backing_off(peeked):
                self.decision = Decision()
                break
            self.decision = allocate(self.pool, in_use, self.busy, specs, heads, self.topology)
            for start in self.decision.starts:
                run_as = task_worker_id(self.worker, start.task_id, start.gpus)
                task = self.store.claim_task(start.task_id, self.worker, list(start.gpus), run_as)
                if task is not None:  # None: it left the queue since the peek; the next round looks again
                    self._spawn(self._with_uuids(task), start.queue, run_as, start.gpus)
            if self.decision.starts:
                continue
            lost = self._hold(self.decision.reservations)
            if lost is None:
                break
            others[lost.task_id] = lost  # another pool reserved it first: decide again, seeing that
        bare = [s.name for s in specs if s.own_count]
        self.store.mark_unfit_tasks(bare, len(self.pool), too_large_reason(len(self.pool), self.worker.id))

    # -- GPUs held for a waiting task, one pool per task across hosts -----------------
    def _reserved_elsewhere(self) -> dict[str, GpuReservation]:
        """The tasks other pools (of any host) hold GPUs for; also learns what
        the store says this pool holds (a reservation ended behind its back,
        by a lost-host sweep or its task's start, is made again if still wanted)."""
        mine: GpuReservation | None = None
        others: dict[str, GpuReservation] = {}
        for held in self.store.gpu_reservations():
            if held.worker == self.worker.id:
                mine = held
            else:
                others[held.task_id] = held
        self.held = mine
        return others

    def _heads(
        self, limits: dict[str, int | None], others: Mapping[str, GpuReservation]
    ) -> tuple[dict[str, Head], list[Task]]:
        """Each queue's head for :func:`allocate`, and the tasks peeked.  A head
        another pool reserves for comes with the queue's first task no other
        pool holds (``Head.then``)."""
        peeked = self.store.peek_tasks(limits)
        tasks = list(peeked.values())
        heads: dict[str, Head] = {}
        for queue, task in peeked.items():
            holder = others.get(task.id)
            if holder is None:
                heads[queue] = Head(task.id, task.gpus_needed)
                continue
            behind = self.store.peek_tasks({queue: limits[queue]}, exclude=list(others)).get(queue)
            then = None
            if behind is not None:
                tasks.append(behind)
                then = Head(behind.id, behind.gpus_needed)
            heads[queue] = Head(task.id, task.gpus_needed, held_by=f"{holder.host} ({holder.worker})", then=then)
        return heads, tasks

    def _hold(self, wanted: list[Reservation]) -> GpuReservation | None:
        """Record this pool's reservation (at most one) in the store when it
        changed; the reservation of another pool when that one had reserved the
        same task first (this pool then holds nothing: the caller decides again)."""
        want = wanted[0] if wanted else None
        if want is None:
            return None  # released by the caller
        if self.held is not None and (self.held.task_id, self.held.gpus) == (want.task_id, want.gpus):
            return None
        got = self.store.reserve_gpus(self.worker, want.task_id, want.need, list(want.gpus))
        if got is not None and got.worker != self.worker.id:
            self.held = None
            log.info("worker %s: task %s is reserved by %s on %s", self.worker.id, want.task_id, got.worker, got.host)
            return got
        if got is not None and (self.held is None or self.held.task_id != got.task_id):
            log.info("worker %s: reserving GPUs for task %s (needs %d)", self.worker.id, got.task_id, got.need)
        self.held = got
        return None

    def _release(self, why: str) -> None:
        """This pool holds GPUs for nobody (a read when the store has none for
        it; while the store is unavailable, tried again next turn)."""
        if not self.services and self._write(
            lambda: self.store.drop_reservations(worker=self.worker.id, actor=self.actor, reason=why)
        ):
            self.held = None

    def _fill_services(self, queues: list[str]) -> None:
        for _ in range(MAX_ROUNDS):
            heads = self.store.peek_tasks(dict.fromkeys(queues))
            if self._backing_off(list(heads.values())):
                return
            queue = next((q for q in queues if q in heads), None)
            if queue is None:
                return
            if self.limit is not None and len(self.children) >= self.limit:
                self.decision.waiting[queue] = f"{len(self.children)} services run, the most --services-mode allows"
                return
            task_id = heads[queue].id
            run_as = task_worker_id(self.worker, task_id, [])
            task = self.store.claim_task(task_id, self.worker, [], run_as)
            if task is not None:
                self._spawn(task, queue, run_as, ())
            queues = [q for q in self._pullable() if q in self.specs]

    def _spawn(self, task: Task, queue: str, run_as: str, gpus: tuple[int, ...]) -> None:
        self.order.served(queue)
        argv = [sys.executable, "-m", "fleet.worker", "--home", str(self.home.root), "--worker-id", self.worker.id]
        argv += ["--task", task.id, "--run-as", run_as, "--parent", str(os.getpid())]
        if self.config.path is not None:
            argv += ["--config", str(self.config.path)]
        child = Child(task, queue, run_as, gpus, None)
        self.children[task.id] = child
        try:  # same process group as the pool: a forced stop of the pool reaches it too
            child.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, close_fds=True)
        except OSError as exc:
            child.exited = "never started"
            child.died = f"could not start its worker: {exc.strerror or exc}"
            child.checked = True
            return
        try:
            child.pidfd = os.pidfd_open(child.popen.pid)
        except (AttributeError, OSError):
            child.pidfd = None
        log.info(
            "worker %s: task %s (%s) started on %s, GPUs %s",
            self.worker.id,
            task.id,
            queue,
            run_as,
            format_gpus(list(gpus)) or "none",
        )

    # -- what status shows ------------------------------------------------------------
    def _show(self) -> None:
        running = [c for c in self.children.values() if not c.died]
        shown = PoolState(
            gpus=tuple(self.pool),
            free=tuple(self.decision.free) if not self.services else (),
            children=tuple(PoolChild(c.run_as, c.task.id, c.queue, c.gpus, c.pid) for c in running),
            reservations=tuple(self.decision.reservations),
            waiting=dict(self.decision.waiting),
            busy=dict(self.busy),
            max=self.limit,
        )
        if shown != self.published and self.retry.ready():
            try:
                self.store.update_worker(self.worker.id, pool=shown)
            except StoreUnavailable:
                self.retry.failed()
            except FleetError as exc:
                log.warning("worker %s: %s", self.worker.id, exc)
            else:
                self.published = shown
        if self.stopping is not None:
            return
        state, reason = self._waiting_state()
        backing_off = time.monotonic() < self.no_space_until
        if backing_off:
            state, reason = WorkerState.IDLE, f"not pulling: {self.no_space_reason}"
        if running:
            used = sorted(g for c in running for g in c.gpus)
            where = f" on GPUs {format_gpus(used)}" if used else ""
            cap = f" (max {self.limit})" if self.services and self.limit else ""
            paused = f"; {reason}" if state == WorkerState.PAUSED or backing_off else ""
            state, reason = WorkerState.BUSY, f"running {len(running)} task(s){where}{cap}{paused}"
        notes = [f"reserving for {r.queue} task {r.task_id[:8]} (needs {r.need})" for r in self.decision.reservations]
        notes += [
            f"GPU {gpu_label(g)} {'drained' if why.startswith('drained') else 'busy'}"
            for g, why in sorted(self.busy.items())
        ]
        if notes:
            reason += "; " + "; ".join(notes)
        self._set_state(state, reason)
