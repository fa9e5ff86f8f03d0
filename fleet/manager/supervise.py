"""The manager's side of worker processes: spawn, watch, restart, adopt.

Workers are started in their own session, so neither a ``kill -9`` of the
manager nor a Ctrl-C in its terminal reaches them; they record task results
in the store themselves.  A restarted manager adopts the workers it finds
alive (pid *and* identity match: :mod:`fleet.core.procs`) instead of starting them
twice.

A worker that exits while it was not asked to stop has crashed: every process
of its running task is killed (:mod:`fleet.core.contain`: the attempt's cgroup or
marker, so even a task whose pid was never written, or a child that left its
group), and only once none is left does the task end ``failed`` with reason
``worker died`` (or go back to its queue if it has retries left) and the
worker start again (with backoff if it keeps crashing), so a GPU is never
handed to a new task while a process of the old one lives.  A process that
will not die (stuck in the kernel) holds the worker back; the manager tries
again every tick.  A pool's or services
worker's tasks run under per-task ids and are owned by it (the store's
``owner`` column; their per-task workers die with the pool).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fleet.core.contain import END_WAIT_S, home_attempts
from fleet.core.errors import FleetError, StoreUnavailable
from fleet.core.home import Home
from fleet.core.models import StopRequest, Worker, WorkerState
from fleet.core.procs import Identity, describe_exit, identity, is_same_process, signal_group
from fleet.store import Store
from fleet.worker.orphans import fail_orphaned

log = logging.getLogger(__name__)

ACTOR = "manager"
RESTART_WINDOW_S = 60.0
MAX_RESTARTS = 5
RESTART_RETRY_S = 1.0  # a restart the store could not take is tried again this much later


@dataclass
class Handle:
    """A worker process: our child (``popen``) or adopted from a previous manager."""

    worker_id: str
    pid: int
    pid_start: float | None
    pid_boot: str | None
    popen: subprocess.Popen[bytes] | None = None
    expected_exit: bool = False
    crash_counted: bool = False  # its exit is counted as a crash (once, however often recording it is tried)

    def exit_status(self) -> str | None:
        """None while running, else a sentence describing the exit."""
        if self.popen is not None:
            rc = self.popen.poll()
            return None if rc is None else describe_exit(rc)
        return None if is_same_process(self.pid, self.pid_start, self.pid_boot) else "exited while the manager was away"


class WorkerSupervisor:
    """This host's workers (``host``: the manager's host name); another host's
    rows in a shared store are never spawned, signalled, adopted or recovered
    here, even when, as in tests, the hosts share one machine and their pids
    would pass for ours."""

    def __init__(self, home: Home, store: Store, config_path: Path | None, host: str) -> None:
        self.home = home
        self.store = store
        self.config_path = config_path
        self.host = host
        self.handles: dict[str, Handle] = {}
        self._retry_at: dict[str, float] = {}
        self._crashes: dict[str, list[float]] = {}
        self._ending: dict[str, str] = {}  # dead workers whose tasks' processes are not all gone yet: why
        self._unrecorded: dict[str, tuple[bool, str]] = {}  # dead at start, not recorded yet: (stopping, why)

    def spawn(self, worker: Worker) -> Handle | None:
        if worker.id in self._ending:  # tick() starts it once its last task's processes are gone
            log.warning("manager: worker %s waits for its last task's processes to die", worker.id)
            return None
        argv = [sys.executable, "-m", "fleet.worker", "--home", str(self.home.root), "--worker-id", worker.id]
        if self.config_path is not None:
            argv += ["--config", str(self.config_path)]
        logfile = open(self.home.worker_log(worker.id), "ab")
        try:
            popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            logfile.close()
        started: Identity | None = identity(popen.pid)
        start, boot = (started.ticks, started.boot) if started is not None else (None, None)
        handle = Handle(worker.id, popen.pid, start, boot, popen)
        self.handles[worker.id] = handle
        try:
            self.store.update_worker(worker.id, pid=handle.pid, pid_start=start, pid_boot=boot)
        except StoreUnavailable:
            pass  # the worker writes its pid itself once the store takes it
        log.info("manager: worker %s spawned (pid %d)", worker.id, popen.pid)
        return handle

    def adopt_or_recover(self) -> None:
        """At manager start: keep live workers, recover the ones that died unseen
        (while the store is unavailable, that is left to :meth:`tick`)."""
        for worker in self.store.list_workers(host=self.host):
            if worker.id in self.handles:  # started by this manager already (an `up` at start)
                continue
            if is_same_process(worker.pid, worker.pid_start, worker.pid_boot):
                assert worker.pid is not None
                self.handles[worker.id] = Handle(worker.id, worker.pid, worker.pid_start, worker.pid_boot)
                log.info("manager: adopted running worker %s (pid %d)", worker.id, worker.pid)
                continue
            try:
                if worker.state == WorkerState.STOPPING:
                    self._mark_dead(worker.id, "stopped while the manager was away")
                elif not self._crashed(worker.id, "died while the manager was away"):
                    self._ending[worker.id] = "died while the manager was away"
            except StoreUnavailable:
                self._unrecorded[worker.id] = (worker.state == WorkerState.STOPPING, "while the manager was away")

    def fenced(self, why: str) -> list[str]:
        """This host was declared lost (frozen, cut off) and its attempts ended
        elsewhere: kill its workers and every task of this home now (what the
        store no longer calls ours still runs here), then start its lost
        workers again; those being stopped are marked dead.  The workers started."""
        doomed = {h.pid: h for h in self.handles.values() if h.exit_status() is None}
        for worker in self.store.list_workers(host=self.host):
            if (
                worker.pid
                and worker.pid not in doomed
                and is_same_process(worker.pid, worker.pid_start, worker.pid_boot)
            ):
                doomed[worker.pid] = Handle(worker.id, worker.pid, worker.pid_start, worker.pid_boot)
        for handle in doomed.values():
            signal_group(handle.pid, signal.SIGKILL)
        deadline = time.monotonic() + END_WAIT_S
        while any(h.exit_status() is None for h in doomed.values()) and time.monotonic() < deadline:
            time.sleep(0.02)
        for attempt in home_attempts(self.home.root):
            if not attempt.end():
                log.error("manager: task %s: processes left after SIGKILL", attempt.task_id)
        self.handles.clear()
        self._retry_at.clear()
        self._ending.clear()
        self._unrecorded.clear()
        started: list[str] = []
        for worker in self.store.list_workers(host=self.host):
            if worker.state != WorkerState.LOST:
                continue
            if worker.stop_request is not None:
                self._mark_dead(worker.id, f"stopped ({why})")
                continue
            back = self.store.register_worker(worker, ACTOR)
            self.spawn(back)
            started.append(worker.id)
        return started

    def request_stop(self, worker_id: str, drain: bool, requeue: bool, by: str) -> None:
        """Through the worker's row; while the store is unavailable a plain
        stop is sent as SIGTERM instead (a drain or requeue needs the row)."""
        handle = self.handles.get(worker_id)
        if handle is not None:
            handle.expected_exit = True
        try:
            self.store.update_worker(worker_id, stop_request=StopRequest(drain, requeue, by))
        except StoreUnavailable:
            if handle is None or drain or requeue:
                raise
            log.info("manager: store unavailable: stopping worker %s by SIGTERM", worker_id)
            signal_group(handle.pid, signal.SIGTERM)

    def force_kill(self, worker_id: str) -> None:
        """Second stop: SIGTERM again makes the worker kill its task at once."""
        handle = self.handles.get(worker_id)
        if handle is not None and handle.exit_status() is None:
            signal_group(handle.pid, signal.SIGTERM)

    def has(self, worker_id: str) -> bool:
        """A process of this worker is known (spawned or adopted)."""
        return worker_id in self.handles

    def cancel_restarts(self) -> None:
        self._retry_at.clear()

    def alive(self) -> list[str]:
        return [wid for wid, h in self.handles.items() if h.exit_status() is None]

    def tick(self) -> None:
        """Notice exits; restart crashed workers whose backoff has passed.

        Raises StoreUnavailable when what it found cannot be recorded; nothing
        is lost: an exit stays noticed (its handle is kept, its crash counted
        once) and the next tick records it."""
        now = time.monotonic()
        for wid, (stopping, why) in list(self._unrecorded.items()):
            if stopping:
                self._mark_dead(wid, f"stopped {why}")
            elif not self._crashed(wid, f"died {why}"):
                self._ending[wid] = f"died {why}"
            del self._unrecorded[wid]
        for wid, why in list(self._ending.items()):
            if self._crashed(wid, why):
                del self._ending[wid]
                self._schedule_restart(wid, now)
        for wid, handle in list(self.handles.items()):
            status = handle.exit_status()
            if status is None:
                continue
            self._exited(handle, status, now)
            del self.handles[wid]
        for wid, when in list(self._retry_at.items()):
            if now >= when:
                self._retry_at[wid] = now + RESTART_RETRY_S  # if the store cannot take it now
                self._restart(wid)
                del self._retry_at[wid]

    def _exited(self, handle: Handle, status: str, now: float) -> None:
        wid = handle.worker_id
        try:
            worker = self.store.get_worker(wid)
        except StoreUnavailable:
            raise
        except FleetError:
            return
        if handle.expected_exit or worker.state in (WorkerState.STOPPING, WorkerState.DEAD):
            if worker.state != WorkerState.DEAD:
                self._mark_dead(wid, f"stopped ({status})")
            log.info("manager: worker %s exited (%s)", wid, status)
            return
        if not handle.crash_counted:
            log.warning("manager: worker %s died (%s)", wid, status)
            handle.crash_counted = True
            self._crashes[wid] = [t for t in self._crashes.get(wid, []) if now - t < RESTART_WINDOW_S] + [now]
        if self._crashed(wid, f"worker died ({status})"):
            self._schedule_restart(wid, now)
        else:  # restarted only once no process of its task is left
            self._ending[wid] = f"worker died ({status})"

    def _schedule_restart(self, worker_id: str, now: float) -> None:
        crashes = [t for t in self._crashes.get(worker_id, []) if now - t < RESTART_WINDOW_S]
        if len(crashes) > MAX_RESTARTS:
            self._mark_dead(worker_id, f"crashed {len(crashes)} times in a minute; not restarted (see its log)")
            return
        self._retry_at[worker_id] = now + min(30.0, 0.25 * 2 ** (max(1, len(crashes)) - 1))

    def _restart(self, worker_id: str) -> None:
        try:
            worker = self.store.get_worker(worker_id)
            if worker.stop_request is not None:
                return
            worker = self.store.register_worker(worker, ACTOR)
            self.store.update_worker(worker_id, restarts=worker.restarts + 1)
        except StoreUnavailable:
            raise
        except FleetError as exc:
            log.error("manager: cannot restart worker %s: %s", worker_id, exc)
            return
        try:
            self.spawn(worker)
        except OSError as exc:
            log.error("manager: cannot restart worker %s: %s", worker_id, exc)

    def _crashed(self, worker_id: str, why: str) -> bool:
        """Kill every process of the dead worker's tasks and record their end:
        its own task, or every task of a pool or services worker (their
        per-task workers died with it).  The worker is marked dead once none
        is left; False while some remain (see the module docstring)."""
        try:
            worker = self.store.get_worker(worker_id)
        except StoreUnavailable:
            raise
        except FleetError as exc:
            log.error("manager: worker %s: %s", worker_id, exc)
            return True
        done = True
        for task in self.store.running_tasks(owner=worker.id):
            done = fail_orphaned(self.home.root, self.store, task, "worker died", ACTOR) and done
        if done:
            self._mark_dead(worker_id, why)
        return done

    def _mark_dead(self, worker_id: str, why: str) -> None:
        try:
            self.store.set_worker_state(
                worker_id, WorkerState.DEAD, why, ACTOR, pid=None, pid_start=None, pid_boot=None
            )
        except StoreUnavailable:
            raise
        except FleetError as exc:
            log.error("manager: worker %s: %s", worker_id, exc)
