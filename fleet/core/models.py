"""Task, worker and queue records and their state machines, with the records
that hang off them (attempts, events, GPU drains and reservations); a
host's records are in :mod:`fleet.core.hosts`.

States are ``str`` enums (the store keeps ``.value``).  The legal moves are
listed here once; every change goes through the store's transition function,
which checks the move against these tables and records an event.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleet.core.errors import InvalidTransition

if TYPE_CHECKING:  # typed twins in the pure policy modules (which import this one)
    from fleet.core.procs import Identity
    from fleet.policy.allocate import PoolState
    from fleet.policy.effective import Effective
    from fleet.policy.hours import Schedule
    from fleet.policy.queuespec import QueueSpec

MAX_DIFF_BYTES = 50 * 1024 * 1024  # a task's uncommitted diff: refused by ``submit`` and the API above this


class TaskStatus(str, enum.Enum):
    CREATED = "created"
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def ended(self) -> bool:
        return self in ENDED


ENDED = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.STOPPED})

TASK_MOVES: dict[TaskStatus, frozenset[TaskStatus]] = {
    # created -> queued: enqueue
    TaskStatus.CREATED: frozenset({TaskStatus.QUEUED}),
    # queued -> created: dequeue; -> in_progress: a worker took it; -> stopped: aborted while waiting
    TaskStatus.QUEUED: frozenset({TaskStatus.CREATED, TaskStatus.IN_PROGRESS, TaskStatus.STOPPED}),
    # a retry or `stop --requeue` ends the attempt first (failed/stopped -> queued): a running
    # task can never be queued, and so never run twice
    TaskStatus.IN_PROGRESS: frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.STOPPED}),
    # an ended task can be enqueued again (ClearML's "reset and enqueue")
    TaskStatus.COMPLETED: frozenset({TaskStatus.QUEUED}),
    TaskStatus.FAILED: frozenset({TaskStatus.QUEUED}),
    TaskStatus.STOPPED: frozenset({TaskStatus.QUEUED}),
}


class WorkerState(str, enum.Enum):
    IDLE = "idle"
    BUSY = "busy"
    PAUSED = "paused"
    STOPPING = "stopping"
    DEAD = "dead"
    LOST = "lost"  # its host's lease expired and another host's manager declared it lost


WORKER_MOVES: dict[WorkerState, frozenset[WorkerState]] = {
    WorkerState.IDLE: frozenset(
        {WorkerState.BUSY, WorkerState.PAUSED, WorkerState.STOPPING, WorkerState.DEAD, WorkerState.LOST}
    ),
    WorkerState.BUSY: frozenset(
        {WorkerState.IDLE, WorkerState.PAUSED, WorkerState.STOPPING, WorkerState.DEAD, WorkerState.LOST}
    ),
    WorkerState.PAUSED: frozenset(
        {WorkerState.IDLE, WorkerState.BUSY, WorkerState.STOPPING, WorkerState.DEAD, WorkerState.LOST}
    ),
    WorkerState.STOPPING: frozenset({WorkerState.DEAD, WorkerState.LOST}),
    # dead -> idle: restarted by the manager or by `up`
    WorkerState.DEAD: frozenset({WorkerState.IDLE}),
    # lost -> idle: only by its own host's manager, once that host is registered again
    # (Store.register_worker); the worker process itself cannot leave lost (it may be the
    # stale copy of a frozen host), so a lost worker claims nothing
    WorkerState.LOST: frozenset({WorkerState.DEAD}),
}
RESTARTABLE = frozenset({WorkerState.DEAD, WorkerState.LOST})  # what register_worker brings back to idle


class WorkerMode(str, enum.Enum):
    STATIC = "static"
    DYNAMIC = "dynamic"
    SERVICES = "services"


class Runner(str, enum.Enum):
    """What runs an attempt, recorded with its owner when the attempt starts
    (the store's ``owner`` and ``runner`` columns).  The owner is the
    registered worker the attempt belongs to: the static worker itself, the
    pool or services worker whose per-task child runs it; for a remote
    executor or ``fleetctl execute`` the id it runs under (no registered
    worker)."""

    STATIC = "static"  # a static worker's own loop
    POOL = "pool"  # a per-task child of a dynamic GPU pool
    SERVICE = "service"  # a per-task child of a services worker
    REMOTE = "remote"  # a remote executor (fleet/remote_executor.py), kept alive by a lease
    EXECUTE = "execute"  # ``fleetctl execute`` in a terminal


def check_task_move(task_id: str, old: TaskStatus, new: TaskStatus) -> None:
    if new not in TASK_MOVES[old]:
        raise InvalidTransition(f"task {task_id} is {old.value}; it cannot become {new.value}", field="task")


def check_worker_move(worker_id: str, old: WorkerState, new: WorkerState) -> None:
    if new != old and new not in WORKER_MOVES[old]:
        raise InvalidTransition(f"worker {worker_id} is {old.value}; it cannot become {new.value}", field="worker")


@dataclass
class Script:
    """What a task runs: a command in a folder, or a git checkout.

    With ``repo`` set, the code is ``repo`` at ``commit`` plus ``diff`` (git
    patch text: the submitter's uncommitted changes and untracked files), and
    the command runs in ``repo_dir`` (relative to the checkout's root);
    ``working_dir`` is the folder it was submitted from.  ``setup_script``
    is a shell script run with bash in the task's folder (the checkout, for a
    git task) before the Python environment is built.  JSON written before a
    field existed still loads (missing keys take their defaults)."""

    command: list[str]
    working_dir: str
    repo: str | None = None
    branch: str | None = None
    commit: str | None = None
    diff: str | None = None
    entry_point: str | None = None
    repo_dir: str | None = None
    setup_script: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "command": list(self.command),
            "working_dir": self.working_dir,
            "repo": self.repo,
            "branch": self.branch,
            "commit": self.commit,
            "diff": self.diff,
            "entry_point": self.entry_point,
            "repo_dir": self.repo_dir,
            "setup_script": self.setup_script,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Script:
        return cls(
            command=list(data.get("command") or []),
            working_dir=str(data.get("working_dir") or "."),
            repo=data.get("repo"),
            branch=data.get("branch"),
            commit=data.get("commit"),
            diff=data.get("diff"),
            entry_point=data.get("entry_point"),
            repo_dir=data.get("repo_dir"),
            setup_script=data.get("setup_script"),
        )


@dataclass(frozen=True)
class DockerMode:
    """An image and extra ``docker run`` arguments.  A worker in docker mode
    (``up --docker IMAGE ARGS``) runs every task in a container of ``image``
    ("": the task's own image, else the configured default); a task's own
    (``submit --docker IMAGE --docker-args ...``) is used by such a worker."""

    image: str = ""
    args: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.image}
        if self.args:
            out["args"] = list(self.args)
        return out

    @classmethod
    def from_json(cls, data: object) -> DockerMode | None:
        """None for an empty or missing value (``{}`` in the store)."""
        if not isinstance(data, dict) or not data:
            return None
        return cls(str(data.get("image") or ""), tuple(str(a) for a in data.get("args") or []))


@dataclass(frozen=True)
class TaskRequirements:
    """What a task's environment must hold beyond its code: a requirements
    file's text, packages (one requirement each) and a Python version; once
    an attempt has built or reused its environment, what it holds: the frozen
    package list, the package manager and the Python that ran it (recorded by
    the store's ``record_environment``, answered under the same key)."""

    file: str = ""
    packages: tuple[str, ...] = ()
    python_version: str = ""
    frozen: tuple[str, ...] = ()
    manager: str = ""
    python: str = ""

    def __bool__(self) -> bool:
        return bool(self.file or self.packages or self.python_version)

    def to_json(self) -> dict[str, Any]:
        """Only the parts given (``{}`` when none), as stored and answered."""
        out: dict[str, Any] = {}
        if self.packages:
            out["packages"] = list(self.packages)
        if self.file:
            out["file"] = self.file
        if self.python_version:
            out["python_version"] = self.python_version
        if self.manager:
            out.update(frozen=list(self.frozen), manager=self.manager, python=self.python)
        return out

    @classmethod
    def from_json(cls, data: object) -> TaskRequirements:
        """Raises ValueError for a value that is not this shape."""
        if not data:
            return cls()
        if not isinstance(data, dict):
            raise ValueError(f"requirements: expected an object, got {type(data).__name__}")
        packages, text = data.get("packages") or [], data.get("file") or ""
        if not isinstance(packages, list) or not isinstance(text, str):
            raise ValueError("requirements: expected packages (a list) and file (text)")
        return cls(
            text,
            tuple(str(p) for p in packages),
            str(data.get("python_version") or ""),
            tuple(str(p) for p in data.get("frozen") or []),
            str(data.get("manager") or ""),
            str(data.get("python") or ""),
        )


@dataclass
class TaskSpec:
    """What a user asks for when creating a task."""

    script: Script
    name: str = ""
    env: dict[str, str] = field(default_factory=dict)
    priority: int = 0
    timeout: float | None = None
    retries: int = 0
    gpus: int | None = None
    user: str = ""
    requirements: TaskRequirements = field(default_factory=lambda: TaskRequirements())
    docker: DockerMode | None = None  # ``submit --docker IMAGE [--docker-args ...]``
    parent: str | None = None
    array_index: int | None = None  # its place in an array (a sweep); the array is given to the store


@dataclass(frozen=True)
class ArraySpec:
    """An array of tasks made in one call (a sweep): ``max_running`` caps how
    many of its tasks run at once across every worker (None: no cap)."""

    id: str
    max_running: int | None = None


@dataclass(frozen=True)
class TaskArray:
    """An array as stored, with how many of its tasks are in each status."""

    id: str
    max_running: int | None
    created_at: float
    user: str
    queue: str | None
    size: int
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Task:
    id: str
    name: str
    status: TaskStatus
    status_reason: str
    queue: str | None
    priority: int
    script: Script
    env: dict[str, str]
    user: str
    created_at: float
    attempt: int = 0
    retries: int = 0
    timeout: float | None = None
    gpus_needed: int | None = None
    worker: str | None = None
    host: str | None = None
    gpus: list[int] = field(default_factory=list)
    exit_code: int | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    pid: int | None = None
    pid_start: float | None = None  # clock ticks since boot (fleet.procs); wall-clock seconds in old rows
    pid_boot: str | None = None  # the boot id; None in rows from before it was recorded
    abort_requested: str | None = None
    requirements: TaskRequirements = field(default_factory=lambda: TaskRequirements())
    docker: DockerMode | None = None
    env_cached: bool = False
    parent: str | None = None
    gpu_uuids: list[str] = field(default_factory=list)  # NVML's UUIDs of ``gpus`` this attempt; [] without NVML
    owner: str | None = None  # the worker the attempt belongs to (see Runner); None before the first attempt
    runner: Runner | None = None  # what runs the attempt; None before the first attempt
    array_id: str | None = None  # the array (sweep) it was made in, ``a-`` and hex
    array_index: int | None = None  # its place in that array


@dataclass(frozen=True)
class StopRequest:
    """A stop asked of a worker (in its row, so its per-task workers and a later
    manager see it): ``drain`` lets the running tasks finish, ``requeue`` puts
    a stopped task back at the head of its queue; ``by`` says who asked."""

    drain: bool = False
    requeue: bool = False
    by: str = "fleetctl stop"


@dataclass(frozen=True)
class WorkerOptions:
    """A worker's mode options from ``up``: a dynamic pool's queue specs, a
    services worker's limit of services at once (None: no limit), docker mode."""

    specs: tuple[QueueSpec, ...] = ()
    max: int | None = None
    docker: DockerMode | None = None


@dataclass
class Worker:
    id: str
    host: str
    mode: WorkerMode
    gpus: list[int] | None
    queues: list[str]
    order_fairness: bool
    state: WorkerState
    state_reason: str
    created_at: float
    pid: int | None = None
    pid_start: float | None = None  # clock ticks since boot (fleet.procs); wall-clock seconds in old rows
    pid_boot: str | None = None  # the boot id; None in rows from before it was recorded
    last_seen: float | None = None
    stop_request: StopRequest | None = None
    restarts: int = 0
    schedule: Schedule | None = None  # working hours from `up --uptime/--downtime`
    effective: Effective | None = None  # computed by the manager's schedule driver; None until it has
    options: WorkerOptions = field(default_factory=WorkerOptions)  # mode options from `up`
    pool: PoolState | None = None  # a pool's last decision (fleet.worker.gpupool)


@dataclass(frozen=True)
class TaskAttempt:
    """One attempt of a task, as the store keeps it (``task_attempts``)."""

    task_id: str
    attempt: int
    worker: str | None  # the id it ran under
    host: str | None
    gpus: list[int]
    started_at: float | None
    finished_at: float | None = None
    status: TaskStatus = TaskStatus.IN_PROGRESS
    exit_code: int | None = None
    reason: str = ""
    gpu_uuids: list[str] = field(default_factory=list)
    peak_rss_mb: float | None = None  # from wait4 when its main process was reaped (ExitUsage)
    cpu_s: float | None = None
    owner: str | None = None  # see Runner
    runner: Runner | None = None


@dataclass(frozen=True)
class RuntimeProperty:
    """A worker's runtime property (ClearML's ``force`` and friends)."""

    value: str
    expires_at: float | None  # epoch seconds; None: never expires
    set_at: float


@dataclass(frozen=True)
class ExitUsage:
    """What the kernel reports for a task's main process when it is reaped
    (``wait4``): peak RSS and CPU seconds over its whole life, its waited-for
    children included.  A task too short for the sampler's tick has figures."""

    peak_rss_mb: float
    cpu_s: float


@dataclass(frozen=True)
class TaskEnd:
    """The end of a task's current attempt, as its runner records it
    (:meth:`Store.finish_task`'s arguments).  A static worker hands it to its
    next claim, which records it in the claim's own transaction."""

    task_id: str
    status: TaskStatus
    exit_code: int | None
    reason: str
    actor: str
    requeue: str | None = None  # "head" or "tail": back into its queue (retries, stop --requeue)
    usage: ExitUsage | None = None
    pid: int | None = None  # the attempt's process, for a task that ended before its pid was written
    started: Identity | None = None
    attempt: int | None = None  # fencing: the runner's attempt (Store.finish_task); None for the manager's own


@dataclass
class Queue:
    id: str
    name: str
    tags: list[str]
    created_at: float
    pending: int = 0
    running: int = 0


@dataclass
class Event:
    id: int
    at: float
    kind: str
    subject: str
    old: str | None
    new: str
    actor: str
    reason: str


@dataclass
class GpuDrain:
    """A GPU that gets no new task: drained by a person (``manual``) or by its
    health (``health``: an Xid, an ECC error, a counter, a lost GPU)."""

    host: str
    gpu: int  # a unit: see fleet.gpus
    reason: str
    source: str  # "manual" | "health"
    at: float
    actor: str


@dataclass(frozen=True)
class GpuReservation:
    """GPUs a dynamic pool holds idle for a queued task it cannot start yet
    (so a stream of smaller tasks does not starve it).  One per task across
    the fleet: the first pool that reserves wins, and every other pool, on
    any host, sees it and holds nothing for that task.  It ends when the task
    leaves the queue (claimed, aborted, dequeued), when its pool reserves for
    another task or stops, and when its host is lost."""

    task_id: str
    worker: str  # the pool that holds the GPUs
    host: str
    need: int  # GPUs the task needs to start
    gpus: tuple[int, ...]  # the free GPUs held for it now (fewer than ``need``)
    at: float  # when it was reserved
