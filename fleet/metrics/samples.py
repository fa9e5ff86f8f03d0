"""What one sampler tick records, and how each kind of series is stored.

Four kinds of series: ``host`` (one per host), ``gpu`` (one per GPU),
``worker`` (one per live worker) and ``task`` (one per running task).  Each is
a wide table with the columns listed in :data:`KINDS`.  Every row carries the
host it was taken on (the first key of every kind): many hosts write into one
shared store, each its own workers and tasks, and a view reads every host's
series or one host's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.core.nvml import GpuSample


@dataclass(frozen=True)
class HostSample:
    host: str
    cpu_percent: float
    load1: float
    mem_used_mb: float
    mem_total_mb: float
    mem_percent: float
    disk_free_gb: float | None  # None when the home's file system cannot be read
    net_rx_bps: float | None  # None on the first tick (a rate needs two readings)
    net_tx_bps: float | None


@dataclass(frozen=True)
class TaskSample:
    """A running task's process group: CPU summed over its processes (100 = one core)."""

    task: str
    attempt: int
    worker: str | None
    pids: tuple[int, ...]
    cpu_percent: float
    rss_mb: float  # summed over the processes (shared pages counted in each)
    gpu_mem_mb: float | None  # None without NVML


@dataclass(frozen=True)
class WorkerSample:
    worker: str
    state: str
    gpus: tuple[int, ...]
    gpu_util_percent: float | None  # mean over its GPUs; None without NVML
    gpu_mem_mb: float | None
    cpu_percent: float  # of its running tasks
    rss_mb: float


@dataclass(frozen=True)
class Snapshot:
    at: float
    host: HostSample
    gpus: tuple[GpuSample, ...] = ()
    workers: tuple[WorkerSample, ...] = ()
    tasks: tuple[TaskSample, ...] = ()
    tick_s: float = 0.0  # what taking this snapshot cost the sampler (wall time)


@dataclass(frozen=True)
class Kind:
    """A series kind's table: ``keys`` name a series, ``values`` are averaged in
    roll-ups, ``maxima`` take the maximum."""

    name: str
    table: str
    keys: tuple[str, ...]
    values: tuple[str, ...]
    maxima: tuple[str, ...] = field(default_factory=tuple)

    @property
    def columns(self) -> tuple[str, ...]:
        return self.keys + self.values + self.maxima


KINDS: dict[str, Kind] = {
    "host": Kind(
        "host",
        "metrics_host",
        ("host",),
        (
            "cpu_percent",
            "load1",
            "mem_used_mb",
            "mem_total_mb",
            "mem_percent",
            "disk_free_gb",
            "net_rx_bps",
            "net_tx_bps",
        ),
    ),
    "gpu": Kind(
        "gpu",
        "metrics_gpu",
        ("host", "gpu"),
        ("util_percent", "mem_used_mb", "mem_total_mb", "temperature_c", "power_w", "processes"),
    ),
    "worker": Kind(
        "worker",
        "metrics_worker",
        ("host", "worker"),
        ("busy", "paused", "gpu_util_percent", "gpu_mem_mb", "cpu_percent", "rss_mb"),
    ),
    "task": Kind(
        "task", "metrics_task", ("host", "task"), ("cpu_percent", "rss_mb", "gpu_mem_mb", "processes"), ("attempt",)
    ),
}


def rows(snapshot: Snapshot) -> dict[str, list[tuple[object, ...]]]:
    """The snapshot as rows of each kind's columns (in :attr:`Kind.columns` order)."""
    h = snapshot.host
    return {
        "host": [
            (
                h.host,
                h.cpu_percent,
                h.load1,
                h.mem_used_mb,
                h.mem_total_mb,
                h.mem_percent,
                h.disk_free_gb,
                h.net_rx_bps,
                h.net_tx_bps,
            )
        ],
        "gpu": [
            (
                h.host,
                g.index,
                g.utilization_percent,
                g.memory_used_mb,
                g.memory_total_mb,
                g.temperature_c,
                g.power_w,
                len(g.processes),
            )
            for g in snapshot.gpus
        ],
        "worker": [
            (
                h.host,
                w.worker,
                1.0 if w.state == "busy" else 0.0,
                1.0 if w.state == "paused" else 0.0,
                w.gpu_util_percent,
                w.gpu_mem_mb,
                w.cpu_percent,
                w.rss_mb,
            )
            for w in snapshot.workers
        ],
        "task": [
            (h.host, t.task, t.cpu_percent, t.rss_mb, t.gpu_mem_mb, len(t.pids), t.attempt) for t in snapshot.tasks
        ],
    }
