"""The store interface: every read and write of shared state goes through it.

Two implementations: SQLite (:mod:`fleet.store.sqlite`, one host, the
default) and PostgreSQL (:mod:`fleet.store.postgres`, shared by many hosts:
``claim_next_task`` is ``SELECT ... FOR UPDATE SKIP LOCKED``); they share
their portable SQL and the one transition function, and callers cannot tell
them apart.  :func:`fleet.store.open_store` picks one.

Any method may raise :class:`~fleet.errors.StoreUnavailable` when the store
cannot be used right now (disk full, read-only, I/O error; a database server
gone or busy): nothing was changed, and the same call can be made again
later.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fleet.core.hosts import HostInfo, HostRow, LostHost
from fleet.core.models import (
    ArraySpec,
    Event,
    ExitUsage,
    GpuDrain,
    GpuReservation,
    Queue,
    Runner,
    RuntimeProperty,
    Task,
    TaskArray,
    TaskAttempt,
    TaskEnd,
    TaskSpec,
    TaskStatus,
    Worker,
    WorkerState,
)
from fleet.core.notices import Notice
from fleet.core.procs import Identity

ROLLUP_S = 60  # seconds a roll-up of samples averages
MAX_LOG_CHUNK = 1024 * 1024  # the most bytes one :meth:`Store.append_log` takes

if TYPE_CHECKING:
    from fleet.metrics.report import Attempt, StateChange, WorkerInfo
    from fleet.metrics.samples import Kind, Snapshot


class Store(abc.ABC):
    # -- queues -----------------------------------------------------------------
    @abc.abstractmethod
    def create_queue(self, name: str, tags: list[str], actor: str) -> Queue: ...

    @abc.abstractmethod
    def get_queue(self, name_or_id: str) -> Queue: ...

    @abc.abstractmethod
    def list_queues(self) -> list[Queue]: ...

    @abc.abstractmethod
    def set_queue_tags(self, name_or_id: str, tags: list[str], actor: str) -> Queue: ...

    @abc.abstractmethod
    def delete_queue(self, name_or_id: str, actor: str, force: bool = False) -> None: ...

    # -- tasks ------------------------------------------------------------------
    @abc.abstractmethod
    def create_task(self, spec: TaskSpec, queue: str | None, actor: str) -> Task: ...

    @abc.abstractmethod
    def get_task(self, id_or_prefix: str) -> Task: ...

    # -- arrays (many tasks made in one call) ----------------------------------------
    @abc.abstractmethod
    def create_tasks(self, specs: list[tuple[TaskSpec, str | None]], array: ArraySpec | None, actor: str) -> list[str]:
        """Create every ``(spec, queue)`` in one transaction (all or none), queued in
        the order given; with ``array`` they form that array.  Their ids, in order."""

    @abc.abstractmethod
    def get_array(self, array_id: str) -> TaskArray:
        """The array with its tasks counted by status (NotFound when there is none)."""

    @abc.abstractmethod
    def array_tasks(self, array_id: str, statuses: list[TaskStatus] | None = None) -> list[Task]:
        """The array's tasks in index order."""

    @abc.abstractmethod
    def abort_array(self, array_id: str, actor: str, reason: str) -> list[Task]:
        """In one transaction: the array's queued tasks stopped, its running ones
        flagged for their workers; the tasks changed."""

    @abc.abstractmethod
    def list_tasks(
        self,
        *,
        queue: str | None = None,
        status: list[TaskStatus] | None = None,
        worker: str | None = None,
        host: str | None = None,
        limit: int = 100,
        offset: int = 0,
        summary: bool = False,
        max_bytes: int | None = None,
    ) -> tuple[list[Task], int]:
        """Tasks newest first, and how many match.  ``host``: the tasks whose
        current (or last) attempt runs or ran there.  ``summary``: the large fields
        are not read (env values come back empty, the diff, the setup script and
        the requirements file as markers: see :data:`fleet.store.rows.SUMMARY_MARK`).
        ``max_bytes``: stop adding rows once their text passes that size (at
        least one row is given)."""

    @abc.abstractmethod
    def enqueue_task(self, task_id: str, queue: str, actor: str, reason: str = "", head: bool = False) -> Task: ...

    @abc.abstractmethod
    def dequeue_task(self, task_id: str, actor: str) -> Task: ...

    @abc.abstractmethod
    def claim_next_task(
        self,
        worker: Worker,
        queues: list[str],
        gpus: list[int],
        busy: str | None = None,
        ended: TaskEnd | None = None,
    ) -> Task | None:
        """Atomically hand the first fitting queued task of ``queues`` (in that
        order) to ``worker``: under any number of concurrent callers a task is
        handed to exactly one.  Nothing is claimed while one of ``gpus`` (or
        the GPU a MIG unit of them is on) is drained on the worker's host, nor
        for a lost worker.  With ``busy`` (a reason, ``{task}`` replaced by
        the task's id), the worker's row becomes busy in the same transaction
        where it may (a worker with no row, or one stopping, is left as it is).
        With ``ended``, the worker's last task's end is recorded first, in the
        same transaction (as :meth:`finish_task` does; a task put back in its
        queue by it may be the one claimed); when that end cannot be recorded
        (:class:`~fleet.core.errors.FleetError`) nothing is, and nothing is claimed."""

    @abc.abstractmethod
    def set_task_process(self, task_id: str, pid: int, started: Identity | None, attempt: int | None = None) -> None:
        """Record the attempt's process.  With ``attempt`` (a runner's write) the
        write is fenced: :class:`~fleet.errors.Fenced`, nothing changed, once that
        attempt no longer owns the task (see :meth:`finish_task`)."""

    @abc.abstractmethod
    def request_abort(self, task_id: str, actor: str, reason: str) -> Task:
        """A queued task is stopped at once; a running one is flagged for its worker."""

    @abc.abstractmethod
    def finish_task(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        exit_code: int | None,
        reason: str,
        actor: str,
        requeue: str | None = None,
        usage: ExitUsage | None = None,
        pid: int | None = None,
        started: Identity | None = None,
        attempt: int | None = None,
    ) -> Task:
        """End the current attempt with ``status`` (and, with ``pid``, record the
        attempt's process in the same transaction, for a task that ended before
        its worker wrote it); ``requeue`` ("head"/"tail")
        then puts the task back in its queue (retries, ``stop --requeue``);
        ``usage`` is the attempt's figures from the kernel, when reaped.

        Fencing: with ``attempt`` (every runner's write gives it) the write is
        made only while that attempt still owns the task (in progress, same
        attempt), checked in the same transaction; otherwise it raises
        :class:`~fleet.errors.Fenced` and changes nothing (the attempt was taken
        from a host declared lost, and the task failed or runs elsewhere)."""

    @abc.abstractmethod
    def attempts(self, task_id: str) -> list[TaskAttempt]: ...

    @abc.abstractmethod
    def record_environment(
        self,
        task_id: str,
        env_cached: bool,
        frozen: list[str],
        manager: str,
        python: str,
        attempt: int | None = None,
    ) -> None:
        """Note the environment a task runs in: ``env_cached`` and, in its
        ``requirements``, the keys ``frozen``, ``manager`` and ``python``
        (fenced by ``attempt`` as :meth:`finish_task` is)."""

    @abc.abstractmethod
    def peek_tasks(self, queues: Mapping[str, int | None], exclude: Collection[str] = ()) -> dict[str, Task]:
        """A read, no lock taken: for each queue named, its first queued task
        (higher priority, then first in) whose ``gpus_needed`` is at most the
        given limit (None: any), passing over the tasks in ``exclude``.  Queues
        with no such task are left out."""

    @abc.abstractmethod
    def claim_task(self, task_id: str, worker: Worker, gpus: list[int], run_as: str) -> Task | None:
        """Atomically hand one given task, if it is still queued, to ``worker``
        with ``gpus``; it runs under the id ``run_as`` (a pool's or services
        worker's per-task child: runner ``pool`` or ``service``, owner ``worker``).  None when someone else took it or it left the queue."""

    @abc.abstractmethod
    def start_task(self, task_id: str, worker: Worker, gpus: list[int], actor: str, runner: Runner) -> Task:
        """Start a task that is not running on ``worker`` with ``gpus``, outside
        any queue pull (``runner``: ``fleetctl execute``, a remote executor), in one
        transaction: a created or ended task passes through queued (its queue
        unchanged, so a failed attempt can still be retried there).  Raises
        :class:`~fleet.errors.Conflict` when it is running, or when it needs
        more GPUs than ``gpus`` holds."""

    @abc.abstractmethod
    def running_tasks(
        self, *, owner: str | None = None, runner: Runner | None = None, host: str | None = None
    ) -> list[Task]:
        """The tasks in progress, oldest attempt first, of the given owner (a
        registered worker, or the id a remote executor or ``execute`` runs
        under), runner kind and host (None: any).  An indexed read: ownership
        is recorded when an attempt starts (see :class:`fleet.core.models.Runner`)."""

    @abc.abstractmethod
    def running_by_owner(self) -> dict[str, list[str]]:
        """Owner -> the ids of its tasks in progress (newest first)."""

    @abc.abstractmethod
    def mark_unfit_tasks(self, queues: list[str], max_gpus: int, reason: str) -> int:
        """Give the queued tasks of ``queues`` that ask for more than
        ``max_gpus`` GPUs ``reason`` as their status reason (no state change);
        return how many changed.  Writes only when one does."""

    # -- workers ----------------------------------------------------------------
    @abc.abstractmethod
    def register_worker(self, worker: Worker, actor: str) -> Worker:
        """Insert a worker, or bring a dead or lost one with the same id back to idle."""

    @abc.abstractmethod
    def get_worker(self, worker_id: str) -> Worker: ...

    @abc.abstractmethod
    def list_workers(self, include_dead: bool = False, host: str | None = None) -> list[Worker]:
        """Workers by id; ``host``: only that host's (what a manager spawns,
        signals, adopts and recovers are its own host's workers only)."""

    @abc.abstractmethod
    def set_worker_state(
        self, worker_id: str, state: WorkerState, reason: str, actor: str, **fields: Any
    ) -> Worker: ...

    @abc.abstractmethod
    def update_worker(self, worker_id: str, **fields: Any) -> None:
        """Change non-state fields (:data:`fleet.store.rows.WORKER_FIELDS`: pid,
        last_seen, restarts, and the typed ``stop_request``, ``effective``, ``pool``)."""

    # -- hosts and their leases ----------------------------------------------------
    @abc.abstractmethod
    def register_host(self, name: str, info: HostInfo, *, lease_seconds: float, now: float | None = None) -> HostRow:
        """Register host ``name`` as ``info`` says (a manager's start, or its return
        after it was declared lost): state ``up``, lease renewed now, ``epoch`` one
        more than before.
        ``now``: the lease clock (None: the store's; PostgreSQL's is the server's,
        so the hosts' clocks need not agree)."""

    @abc.abstractmethod
    def renew_host(self, name: str, now: float | None = None) -> HostRow:
        """Renew the host's lease.  Raises :class:`~fleet.errors.HostLost` when
        the host was declared lost meanwhile (how a frozen host learns it was
        fenced: its manager kills its tasks and registers again), NotFound when
        it is not registered (or left)."""

    @abc.abstractmethod
    def leave_host(self, name: str, actor: str, now: float | None = None) -> None:
        """The host's manager stops cleanly: state ``left``, no one declares it lost."""

    @abc.abstractmethod
    def list_hosts(self, now: float | None = None) -> list[HostRow]:
        """Every host ever registered, by name, with its lease's age on the store's clock."""

    @abc.abstractmethod
    def declare_lost_hosts(self, by: str, now: float | None = None) -> list[LostHost]:
        """Declare lost every ``up`` host (``by`` excepted) whose lease expired,
        each in one transaction with what follows: its workers ``lost``, its
        running attempts ended ``failed`` with ``host <name> lost`` (queued
        again, on any host, when retries are left: the same transition and
        events as any failure), its pools' GPUs freed.  Exactly one manager
        acts on a host: on PostgreSQL the leader holds
        ``pg_try_advisory_xact_lock`` for the transaction (the others return
        at once) and the host's row is re-read under its lock."""

    # -- runtime properties (ClearML's "force" and friends) ---------------------
    @abc.abstractmethod
    def set_runtime_property(
        self, worker_id: str, key: str, value: str, expires_at: float | None, actor: str
    ) -> None: ...

    @abc.abstractmethod
    def delete_runtime_property(self, worker_id: str, key: str, actor: str) -> bool: ...

    @abc.abstractmethod
    def runtime_properties(self, now: float | None = None) -> dict[str, dict[str, RuntimeProperty]]:
        """worker -> key -> its property; expired ones are left out."""

    @abc.abstractmethod
    def purge_runtime_properties(self, now: float, actor: str) -> list[str]:
        """Delete the properties that have expired; return the workers they belonged to."""

    # -- GPUs: UUIDs of an attempt, drained GPUs ---------------------------------
    @abc.abstractmethod
    def set_attempt_gpu_uuids(self, task_id: str, attempt: int, uuids: list[str]) -> None:
        """Record the NVML UUIDs of the GPUs attempt ``attempt`` of the task holds."""

    @abc.abstractmethod
    def drain_gpu(self, host: str, gpu: int, reason: str, source: str, actor: str) -> GpuDrain:
        """Drain a GPU (no new task gets it); draining one already drained keeps
        the first record, except that a health fault replaces a manual drain."""

    @abc.abstractmethod
    def undrain_gpu(self, host: str, gpu: int, actor: str) -> GpuDrain | None:
        """Return a GPU to service; the record it had, None if it was not drained."""

    @abc.abstractmethod
    def drained_gpus(self, host: str | None = None) -> list[GpuDrain]: ...

    # -- GPUs held idle for a waiting task (dynamic pools, across hosts) ---------------
    @abc.abstractmethod
    def reserve_gpus(self, worker: Worker, task_id: str, need: int, gpus: list[int]) -> GpuReservation | None:
        """Make pool ``worker``'s one reservation the one for queued task
        ``task_id`` (holding ``gpus``, the free ones now, of the ``need`` it
        needs), in one transaction; the pool's reservation of any other task
        ends.  The first pool to reserve a task holds it, on whatever host:
        returns the task's reservation, ``worker``'s or another live pool's
        (``worker`` then holds none); None when the task is not queued."""

    @abc.abstractmethod
    def drop_reservations(self, *, worker: str | None = None, host: str | None = None, actor: str, reason: str) -> int:
        """End the reservations of pool ``worker``, or of every pool on
        ``host`` (call this when a host is declared lost); how many ended."""

    @abc.abstractmethod
    def gpu_reservations(self) -> list[GpuReservation]:
        """The reservations in force (task still queued, pool not dead or lost), oldest first."""

    # -- events -----------------------------------------------------------------
    @abc.abstractmethod
    def events(self, kind: str | None = None, subject: str | None = None, limit: int = 200) -> list[Event]: ...

    # -- history: bulk reads by time range for the report and /metrics ------------
    @abc.abstractmethod
    def worker_units(self) -> list[WorkerInfo]:
        """Every worker ever registered (dead ones too): id, host, GPUs, mode."""

    @abc.abstractmethod
    def worker_state_changes(self, since: float, until: float) -> list[StateChange]:
        """Each worker's last state change before ``since``, then every change
        in ``[since, until)`` in the order they happened (worker states only)."""

    @abc.abstractmethod
    def attempts_between(self, since: float, until: float) -> list[Attempt]:
        """The task attempts that overlap ``[since, until)``, with their task's
        queue and user, when each attempt was queued (the task's last move
        to queued before the attempt started; None when unknown) and its
        recorded owner."""

    @abc.abstractmethod
    def ended_counts(self) -> dict[str, int]:
        """Attempts that ended, by status, over all of history."""

    @abc.abstractmethod
    def dispatch_latencies(self, after: int) -> tuple[int, list[float]]:
        """Claim time minus queued time of the attempts recorded after the
        attempt cursor ``after`` (0: from the first); returns the cursor of the
        last one seen (pass it next time) and the latencies in seconds."""

    @abc.abstractmethod
    def queue_waiting_since(self) -> dict[str, float]:
        """Per queue, when its longest-waiting task was queued."""

    # -- task logs shipped into the store (read from any host: fleet.worker.logship) --------
    @abc.abstractmethod
    def append_log(self, task_id: str, attempt: int, pos: int, data: bytes) -> int:
        """Store ``data`` (1 to :data:`MAX_LOG_CHUNK` bytes) at byte ``pos`` of
        the task's log, for its running attempt ``attempt``; the stored log's size after it.  A chunk already
        stored at ``pos`` with the same length (a flush tried again after its
        answer was lost) is not stored twice.  :class:`~fleet.errors.Conflict`
        when ``attempt`` is not the task's running attempt (a copy fenced off:
        its log is closed to it) or ``pos`` is not the stored log's end (a gap
        or an overlap)."""

    @abc.abstractmethod
    def read_log(self, task_id: str, pos: int, limit: int) -> LogSlice:
        """Up to ``limit`` bytes of the task's stored log from byte ``pos``
        (none past its end), and the stored log's size."""

    @abc.abstractmethod
    def log_size(self, task_id: str) -> int:
        """How many bytes of the task's log are stored (0: none)."""

    @property
    def shared(self) -> bool:
        """Many hosts use this store (PostgreSQL): a task's log is shipped into
        it as it is written, for the other hosts to read (:mod:`fleet.worker.logship`)."""
        return False

    # -- notices to the other hosts (fleet.core.notices) ------------------------------------
    @abc.abstractmethod
    def announce(self, notices: Sequence[Notice]) -> None:
        """Tell every process listening on this store (the managers of the other
        hosts) each of ``notices``, at once, outside any transaction (call it after
        the commit it is about).  SQLite: nothing (one host, whose workers the
        datagram reaches)."""

    @abc.abstractmethod
    def subscribe(self) -> Subscription | None:
        """A feed of the notices announced on this store from now on, on a
        connection of its own; None where there is no such feed (SQLite)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most stores need nothing
        """Release connections (optional)."""

    @property
    def location(self) -> str:
        """Where the store lives, as people may see it (``status``, logs): a
        file's path, or a database URL with its password masked."""
        return type(self).__name__


class Subscription(abc.ABC):
    """The notices announced on a store (:meth:`Store.subscribe`), as they come.

    A connection that fails (the server gone, restarted) raises
    :class:`~fleet.errors.StoreUnavailable` from :meth:`wait` and is of no more
    use: close it and subscribe again; what was announced meanwhile is lost."""

    @abc.abstractmethod
    def wait(self, timeout: float) -> list[Notice]:
        """The notices that came, waiting at most ``timeout`` seconds for the first."""

    @abc.abstractmethod
    def close(self) -> None: ...


@dataclass(frozen=True)
class LogSlice:
    """Bytes of a task's log as the store holds it (any bytes: a task may print invalid UTF-8)."""

    pos: int  # where ``data`` starts in the log
    data: bytes
    size: int  # the stored log's size when it was read

    @property
    def end(self) -> int:
        return self.pos + len(self.data)


@dataclass(frozen=True)
class AttemptUsage:
    """One task attempt's figures from the samples (they outlive the samples)."""

    attempt: int
    samples: int
    mean_cpu_percent: float | None
    max_cpu_percent: float | None
    peak_rss_mb: float | None
    peak_gpu_mem_mb: float | None
    first_at: float
    last_at: float


@dataclass(frozen=True)
class Maintenance:
    """What one :meth:`SampleStore.maintain` did."""

    rolled_until: float
    rolled_rows: int
    deleted_raw: int
    deleted_rollups: int


class SampleStore(abc.ABC):
    """The metrics samples: raw rows per tick, one-minute roll-ups, retention,
    time series, and each task attempt's figures (which outlive the samples)."""

    @abc.abstractmethod
    def write(self, snapshot: Snapshot) -> None:
        """Store one tick: a raw row per series, and each running task's figures."""

    @abc.abstractmethod
    def watermark(self) -> float | None:
        """Up to when roll-ups exist (None: none yet)."""

    @abc.abstractmethod
    def maintain(self, now: float, raw_retention_s: float, rollup_retention_s: float) -> Maintenance:
        """Roll up every complete minute not rolled up yet, then drop what is past retention."""

    @abc.abstractmethod
    def series(
        self,
        kind: Kind,
        since: float,
        until: float,
        step: int,
        ids: list[str] | None = None,
        host: str | None = None,
    ) -> list[dict[str, Any]]:
        """Averages per ``step`` seconds in ``[since, until)``, one entry per series:
        ``{"id", "labels": {key: value}, "t": [...], "values": {name: [...]}}`` (the API's shape).
        Every host's series, or (``host``) those taken on that host."""

    @abc.abstractmethod
    def task_usage(self, task_id: str) -> list[AttemptUsage]:
        """Per attempt: samples, mean and max CPU %, peak RSS and peak GPU memory (MB)."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Rows per table and resolution (for tests and the bench)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (optional)."""
