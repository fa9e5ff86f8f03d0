"""The manager's sampler: one thread, one tick every ``fleet.metrics.interval``.

A tick reads the host (CPU, load, memory, disk free under ``FLEET_HOME``,
network rates) with psutil, every GPU through :mod:`fleet.core.nvml` (nothing
without a driver), and the process group of every running task (CPU %, RSS,
and GPU memory of its processes); it derives each worker's figures from its
GPUs and tasks, writes one row per series, and once a minute rolls up and
applies retention.  The last snapshot stays in memory for ``/metrics`` and
the page.  What a tick costs is measured and reported (:attr:`Sampler.cost`).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from fleet.core.config import MetricsConfig
from fleet.core.errors import StoreUnavailable
from fleet.core.models import Task, TaskStatus, Worker
from fleet.core.nvml import GpuSample, Nvml
from fleet.metrics.health import GpuHealth
from fleet.metrics.proc_usage import ProcessMeter
from fleet.metrics.samples import HostSample, Snapshot, TaskSample, WorkerSample
from fleet.metrics.storage import ROLLUP_S, SampleStore
from fleet.store import Store
from fleet.store.faults import Backoff

log = logging.getLogger(__name__)

MB = 1024 * 1024
GB = 1024 * MB
MAX_TASKS = 100_000


@dataclass
class TickCost:
    """Wall and thread-CPU time of the sampler's ticks (seconds)."""

    ticks: int = 0
    wall_total: float = 0.0
    wall_max: float = 0.0
    cpu_total: float = 0.0
    last_wall: float = 0.0

    def add(self, wall: float, cpu: float) -> None:
        self.ticks += 1
        self.wall_total += wall
        self.cpu_total += cpu
        self.wall_max = max(self.wall_max, wall)
        self.last_wall = wall

    def to_json(self) -> dict[str, Any]:
        n = max(self.ticks, 1)
        return {
            "ticks": self.ticks,
            "wall_ms_mean": round(self.wall_total / n * 1000, 3),
            "wall_ms_max": round(self.wall_max * 1000, 3),
            "wall_ms_last": round(self.last_wall * 1000, 3),
            "cpu_ms_mean": round(self.cpu_total / n * 1000, 3),
        }


class Sampler:
    def __init__(
        self,
        store: Store,
        storage: SampleStore,
        nvml: Nvml,
        home: Path,
        hostname: str,
        config: MetricsConfig,
        clock: Callable[[], float] = time.time,
        health: GpuHealth | None = None,
    ) -> None:
        self.store = store
        self.health = health  # GPU health counters, read on every tick
        self.storage = storage
        self.nvml = nvml
        self.home = home
        self.hostname = hostname
        self.config = config
        self.clock = clock
        self.latest: Snapshot | None = None
        self.cost = TickCost()
        self._meter = ProcessMeter()
        self._net: tuple[float, int, int] | None = None
        self._maintained: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        psutil.cpu_percent(interval=None)  # the first call only sets the baseline

    # -- the thread -----------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="metrics", daemon=True)
        self._thread.start()
        log.info("metrics: sampling every %gs (NVML %s)", self.config.interval, "on" if self.nvml.available else "off")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.storage.close()

    def _run(self) -> None:
        retry = Backoff(first=self.config.interval, cap=max(self.config.interval, 60.0))
        while not self._stop.is_set():
            started = time.monotonic()
            wait = self.config.interval
            try:
                self.tick()
            except StoreUnavailable:  # a full disk: the store logs it once; samples are skipped meanwhile
                wait = retry.failed()
            except Exception:  # one bad tick (a vanished file) must not end sampling
                log.exception("metrics: sampling failed")
            else:
                retry.ok()
            self._stop.wait(max(wait - (time.monotonic() - started), 0.01))
        self.storage.close()

    # -- one tick -------------------------------------------------------------------
    def tick(self) -> Snapshot:
        """Sample, store, and (once a minute) roll up; returns the snapshot."""
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        now = self.clock()
        snapshot = self.sample(now)
        self.storage.write(snapshot)
        minute = math.floor(now / ROLLUP_S)
        if self._maintained != minute:
            self._maintained = minute
            self.storage.maintain(
                now, self.config.raw_retention_hours * 3600, self.config.rollup_retention_days * 86400
            )
        wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
        self.cost.add(wall, cpu)
        self.latest = Snapshot(snapshot.at, snapshot.host, snapshot.gpus, snapshot.workers, snapshot.tasks, tick_s=wall)
        return self.latest

    def sample(self, now: float) -> Snapshot:
        """Read everything once, without storing it."""
        host = self._host(now)
        if self.health is not None:
            self.health.check()
        gpus = tuple(self.nvml.sample())
        running, _ = self.store.list_tasks(status=[TaskStatus.IN_PROGRESS], limit=MAX_TASKS)
        # this host's: another host's pids mean nothing here (each host samples its own)
        tasks = self._tasks([t for t in running if t.pid and t.host == self.hostname], gpus, now)
        workers = tuple(self._worker(w, gpus, tasks) for w in self.store.list_workers(host=self.hostname))
        return Snapshot(now, host, gpus, workers, tasks)

    def _host(self, now: float) -> HostSample:
        memory = psutil.virtual_memory()
        free_gb: float | None
        try:
            free_gb = psutil.disk_usage(str(self.home)).free / GB
        except OSError:
            free_gb = None
        rx = tx = None
        counters = psutil.net_io_counters()
        if counters is not None:
            if self._net is not None and now > self._net[0]:
                span = now - self._net[0]
                rx = max(counters.bytes_recv - self._net[1], 0) / span
                tx = max(counters.bytes_sent - self._net[2], 0) / span
            self._net = (now, counters.bytes_recv, counters.bytes_sent)
        return HostSample(
            host=self.hostname,
            cpu_percent=psutil.cpu_percent(interval=None),
            load1=os.getloadavg()[0],
            mem_used_mb=(memory.total - memory.available) / MB,
            mem_total_mb=memory.total / MB,
            mem_percent=memory.percent,
            disk_free_gb=free_gb,
            net_rx_bps=rx,
            net_tx_bps=tx,
        )

    def _tasks(self, running: list[Task], gpus: tuple[GpuSample, ...], now: float) -> tuple[TaskSample, ...]:
        groups = self._meter.groups({t.pid for t in running if t.pid})
        usage = self._meter.measure([pid for members in groups.values() for pid in members], now)
        self._meter.forget_except(set(usage))
        gpu_mem: dict[int, float] = {}
        for gpu in gpus:
            for proc in gpu.processes:
                gpu_mem[proc.pid] = gpu_mem.get(proc.pid, 0.0) + (proc.memory_used_mb or 0.0)
        out = []
        for task in running:
            assert task.pid is not None
            pids = tuple(p for p in groups.get(task.pid, []) if p in usage)
            if not pids:  # not started yet, or already gone: nothing to measure
                continue
            out.append(
                TaskSample(
                    task=task.id,
                    attempt=task.attempt,
                    worker=task.worker,
                    pids=pids,
                    cpu_percent=sum(usage[p].cpu_percent for p in pids),
                    rss_mb=sum(usage[p].rss_mb for p in pids),
                    gpu_mem_mb=sum(gpu_mem.get(p, 0.0) for p in pids) if self.nvml.available else None,
                )
            )
        return tuple(out)

    @staticmethod
    def _worker(worker: Worker, gpus: tuple[GpuSample, ...], tasks: tuple[TaskSample, ...]) -> WorkerSample:
        mine = [g for g in gpus if worker.gpus is not None and g.index in worker.gpus]
        utils = [g.utilization_percent for g in mine if g.utilization_percent is not None]
        used = [g.memory_used_mb for g in mine if g.memory_used_mb is not None]
        its = [t for t in tasks if t.worker == worker.id]
        return WorkerSample(
            worker=worker.id,
            state=worker.state.value,
            gpus=tuple(worker.gpus or ()),
            gpu_util_percent=sum(utils) / len(utils) if utils else None,
            gpu_mem_mb=sum(used) if used else None,
            cpu_percent=sum(t.cpu_percent for t in its),
            rss_mb=sum(t.rss_mb for t in its),
        )
