"""The Prometheus text exposition at ``/metrics`` (prometheus-client).

One collector per app, in its own registry (nothing global): at each scrape
it reads the sampler's last snapshot (host and per-GPU gauges, per-task
usage) and the store (queues, workers, ended attempts); the dispatch latency
histogram (claim time minus queued time) is built from the store
incrementally, so each scrape reads only the attempts recorded since the
previous one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from fleet.core.gpuspec import gpu_label, parent_gpu
from fleet.core.models import WorkerState
from fleet.metrics.history import HistoryReader
from fleet.metrics.samples import Snapshot
from fleet.store import Store

log = logging.getLogger(__name__)

MB = 1024 * 1024
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class _Histogram:
    """Cumulative bucket counts over every attempt seen so far."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.last_rowid = 0
        self.lock = threading.Lock()

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


class FleetCollector(Collector):
    def __init__(self, store: Store, history: HistoryReader, latest: Callable[[], Snapshot | None]) -> None:
        self.store = store
        self.history = history
        self.latest = latest
        self._latency = _Histogram(LATENCY_BUCKETS)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        yield from self._snapshot()
        yield from self._health()
        yield from self._queues_and_workers()
        ended = CounterMetricFamily(
            "fleet_task_attempts_ended", "Task attempts that ended, by status", labels=["status"]
        )
        counts = self.history.ended_counts()
        for status in ("completed", "failed", "stopped"):
            ended.add_metric([status], float(counts.get(status, 0)))
        yield ended
        yield self._dispatch_latency()

    def _snapshot(self) -> Iterator[GaugeMetricFamily]:
        snap = self.latest()
        if snap is None:
            return
        h = snap.host
        for name, doc, value in (
            ("fleet_host_cpu_percent", "Host CPU use, percent of all cores", h.cpu_percent),
            ("fleet_host_load1", "Host load average over one minute", h.load1),
            ("fleet_host_memory_used_bytes", "Host memory in use", h.mem_used_mb * MB),
            ("fleet_host_memory_total_bytes", "Host memory", h.mem_total_mb * MB),
            ("fleet_host_disk_free_bytes", "Free disk under FLEET_HOME", _scaled(h.disk_free_gb, 1024 * MB)),
            ("fleet_host_network_receive_bytes_per_second", "Network receive rate", h.net_rx_bps),
            ("fleet_host_network_transmit_bytes_per_second", "Network transmit rate", h.net_tx_bps),
            ("fleet_sampler_tick_seconds", "Wall time of the sampler's last tick", snap.tick_s),
        ):
            if value is not None:
                yield _gauge(name, doc, value)
        gpu_metrics = {
            "utilization": GaugeMetricFamily("fleet_gpu_utilization_percent", "GPU utilization", labels=["gpu"]),
            "used": GaugeMetricFamily("fleet_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"]),
            "total": GaugeMetricFamily("fleet_gpu_memory_total_bytes", "GPU memory", labels=["gpu"]),
            "temp": GaugeMetricFamily("fleet_gpu_temperature_celsius", "GPU temperature", labels=["gpu"]),
            "power": GaugeMetricFamily("fleet_gpu_power_watts", "GPU power draw", labels=["gpu"]),
            "procs": GaugeMetricFamily("fleet_gpu_processes", "Processes on the GPU", labels=["gpu"]),
        }
        for g in snap.gpus:
            label = [gpu_label(g.index)]
            for key, value in (
                ("utilization", g.utilization_percent),
                ("used", _scaled(g.memory_used_mb, MB)),
                ("total", _scaled(g.memory_total_mb, MB)),
                ("temp", g.temperature_c),
                ("power", g.power_w),
                ("procs", float(len(g.processes))),
            ):
                if value is not None:
                    gpu_metrics[key].add_metric(label, value)
        yield from gpu_metrics.values()
        cpu = GaugeMetricFamily("fleet_task_cpu_percent", "A running task's CPU (100 = one core)", labels=["task"])
        rss = GaugeMetricFamily("fleet_task_rss_bytes", "A running task's resident memory", labels=["task"])
        for t in snap.tasks:
            cpu.add_metric([t.task], t.cpu_percent)
            rss.add_metric([t.task], t.rss_mb * MB)
        yield cpu
        yield rss

    def _health(self) -> Iterator[GaugeMetricFamily]:
        """Per GPU: 1 while in service, 0 while drained for its health; and each drain by source."""
        snap = self.latest()
        drains = self.store.drained_gpus()
        healthy = GaugeMetricFamily(
            "fleet_gpu_healthy", "1 while the GPU is in service, 0 while drained for its health", labels=["host", "gpu"]
        )
        drained = GaugeMetricFamily(
            "fleet_gpu_drained",
            "1 for a drained GPU, by who drained it (manual, health)",
            labels=["host", "gpu", "source"],
        )
        sick = {(d.host, d.gpu) for d in drains if d.source == "health"}
        seen: set[tuple[str, int]] = set()
        if snap is not None:
            for g in snap.gpus:
                seen.add((snap.host.host, g.index))
        seen.update((d.host, d.gpu) for d in drains)
        for host, gpu in sorted(seen):
            ill = (host, gpu) in sick or (host, parent_gpu(gpu)) in sick  # a MIG slice of a sick card
            healthy.add_metric([host, gpu_label(gpu)], 0.0 if ill else 1.0)
        for d in drains:
            drained.add_metric([d.host, gpu_label(d.gpu), d.source], 1.0)
        yield healthy
        yield drained

    def _queues_and_workers(self) -> Iterator[GaugeMetricFamily]:
        pending = GaugeMetricFamily("fleet_queue_pending_tasks", "Queued tasks", labels=["queue"])
        running = GaugeMetricFamily("fleet_queue_running_tasks", "Running tasks", labels=["queue"])
        for q in self.store.list_queues():
            pending.add_metric([q.name], float(q.pending))
            running.add_metric([q.name], float(q.running))
        yield pending
        yield running
        state = GaugeMetricFamily("fleet_worker_state", "1 for the worker's current state", labels=["worker", "state"])
        gpus = GaugeMetricFamily("fleet_worker_gpus", "GPUs of the worker", labels=["worker"])
        for w in self.store.list_workers(include_dead=True):
            for s in WorkerState:
                state.add_metric([w.id, s.value], 1.0 if w.state == s else 0.0)
            gpus.add_metric([w.id], float(len(w.gpus or [])))
        yield state
        yield gpus

    def _dispatch_latency(self) -> HistogramMetricFamily:
        hist = self._latency
        with hist.lock:
            hist.last_rowid, values = self.history.dispatch_latencies(hist.last_rowid)
            for value in values:
                hist.observe(value)
            return HistogramMetricFamily(
                "fleet_dispatch_latency_seconds",
                "Claim time minus queued time of each task attempt",
                buckets=hist.buckets(),
                sum_value=hist.total,
            )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor
