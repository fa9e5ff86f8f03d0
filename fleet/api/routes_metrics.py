"""Metrics, the report, Prometheus text, and the web page's files.

Under ``/api/v1``: ``metrics`` (time series of one kind: host, gpu, worker or
task, over ``since``/``until`` at ``step`` seconds), ``metrics/current``
(the sampler's last snapshot and its cost), ``metrics/tasks/{id}`` (a task's
own figures) and ``report``.  At the root: ``/metrics`` (Prometheus) and the
page (``/`` and ``/static/...``), mounted by :func:`mount_root` after every
API route.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

import fleet
from fleet.api.bounds import GPUS_MAX, MetricsStep
from fleet.api.deps import Backend, BackendDep, HostFilter, TaskId
from fleet.core.errors import NotFound, UsageError
from fleet.core.gpuspec import gpu_json
from fleet.core.validate import task_id, worker_id
from fleet.metrics import report as reports
from fleet.metrics.history import HistoryReader
from fleet.metrics.prometheus import FleetCollector
from fleet.metrics.samples import KINDS, Snapshot
from fleet.metrics.timespec import iso, window
from fleet.service.host_views import check_host

router = APIRouter(tags=["metrics"])


def _web_dir() -> Path:
    """``web/static`` beside the package in a checkout (editable install), else
    where a regular install put it (``<prefix>/share/fleet/web/static``)."""
    beside = Path(fleet.__file__).resolve().parent.parent / "web" / "static"
    installed = Path(sys.prefix) / "share" / "fleet" / "web" / "static"
    return beside if beside.is_dir() or not installed.is_dir() else installed


WEB_DIR = _web_dir()
MAX_POINTS = 10_000
TARGET_POINTS = 300
MAX_IDS = 100
MAX_RANGE_S = 400 * 86400

Kind = Literal["host", "gpu", "worker", "task"]
By = Literal["gpu", "host", "worker", "queue", "user"]
TimeText = Annotated[str, Query(max_length=64, description="a duration before now (24h, 7d), a date, or epoch seconds")]


def _ids(backend: Backend, kind: str, raw: str | None) -> list[str] | None:
    if raw is None or not raw.strip():
        return None
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if len(parts) > MAX_IDS:
        raise UsageError(f"id: at most {MAX_IDS} ids at once, got {len(parts)}", field="id")
    if kind == "gpu":
        if not all(p.isdigit() and len(p) <= 4 and int(p) < GPUS_MAX for p in parts):
            raise UsageError(f"id {raw!r}: expected GPU indices like 0,1", field="id")
        return [str(int(p)) for p in parts]
    if kind == "worker":
        return [worker_id(p, "id") for p in parts]
    if kind == "task":
        return [backend.service.tasks.get(task_id(p.lower(), "id")).id for p in parts]
    if not all(len(p) <= 255 and p.replace("-", "").replace(".", "").replace("_", "").isalnum() for p in parts):
        raise UsageError(f"id {raw!r}: expected host names", field="id")
    return parts


@router.get("/metrics")
def metrics(
    backend: BackendDep,
    kind: Kind = "host",
    id: Annotated[str | None, Query(max_length=10_000, description="comma-separated series ids")] = None,
    since: TimeText = "1h",
    until: TimeText | None = None,
    step: MetricsStep = None,
    host: HostFilter = None,
) -> dict[str, Any]:
    """Time series of one kind, averaged per ``step`` (default: about 300 points);
    every host's (one store, many hosts), or one ``host``'s."""
    start, end = window(since, until, time.time(), MAX_RANGE_S)
    interval = backend.config.fleet.metrics.interval
    if step is None:
        step = max(math.ceil(interval), math.ceil((end - start) / TARGET_POINTS), 1)
    elif (end - start) / step > MAX_POINTS:
        raise UsageError(
            f"step {step}: {math.ceil((end - start) / step)} points; at most {MAX_POINTS} (use a larger step)",
            field="step",
        )
    ids = _ids(backend, kind, id)
    host = check_host(backend.service.store, host)
    series = backend.sampler.storage.series(KINDS[kind], start, end, step, ids, host)
    return {"kind": kind, "since": iso(start), "until": iso(end), "step": step, "interval": interval, "series": series}


def _snapshot_json(snap: Snapshot | None) -> dict[str, Any] | None:
    if snap is None:
        return None
    return {
        "at": iso(snap.at),
        "host": vars(snap.host),
        "gpus": [
            {
                **{k: v for k, v in vars(g).items() if k != "processes"},
                "gpu": gpu_json(g.index),
                "processes": [vars(p) for p in g.processes],
            }
            for g in snap.gpus
        ],
        "workers": [{**vars(w), "gpus": [gpu_json(g) for g in w.gpus]} for w in snap.workers],
        "tasks": [{**vars(t), "pids": list(t.pids)} for t in snap.tasks],
    }


@router.get("/metrics/current")
def current(backend: BackendDep) -> dict[str, Any]:
    """The sampler's last snapshot (null before its first tick) and what its ticks cost."""
    sampler = backend.sampler
    return {
        "interval": backend.config.fleet.metrics.interval,
        "nvml": backend.nvml.available,
        "sampler": sampler.cost.to_json(),
        "snapshot": _snapshot_json(sampler.latest),
        "queues_waiting_since": {q: iso(at) for q, at in backend.service.store.queue_waiting_since().items()},
    }


def _peak(sampled: float | None, at_exit: float | None) -> float | None:
    """The larger of the sampled peak and the kernel's at the task's exit."""
    known = [v for v in (sampled, at_exit) if v is not None]
    return round(max(known), 3) if known else None


def _mean_cpu(sampled: float | None, cpu_s: float | None, runtime: float | None) -> float | None:
    """Mean CPU % over the attempt: from the kernel's CPU seconds at exit when
    there are any (the whole life, however short), else the samples' mean."""
    if cpu_s is not None and runtime:
        return round(cpu_s / runtime * 100, 3)
    return sampled


@router.get("/metrics/tasks/{task_id}")
def task_figures(task_id: TaskId, backend: BackendDep) -> dict[str, Any]:
    """A task's figures: runtime, peak RSS, mean CPU, peak GPU memory (latest attempt first-class, all listed)."""
    task = backend.service.tasks.get(task_id)
    usage = {u.attempt: u for u in backend.sampler.storage.task_usage(task.id)}
    now = time.time()
    attempts = []
    for a in backend.service.tasks.attempts(task):
        end = a.finished_at if a.finished_at is not None else now
        figures = usage.get(a.attempt)
        runtime = end - a.started_at if a.started_at is not None else None
        attempts.append(
            {
                "attempt": a.attempt,
                "status": a.status.value,
                "runtime_s": round(runtime, 3) if runtime is not None else None,
                "samples": figures.samples if figures else 0,
                "peak_rss_mb": _peak(figures.peak_rss_mb if figures else None, a.peak_rss_mb),
                "mean_cpu_percent": _mean_cpu(figures.mean_cpu_percent if figures else None, a.cpu_s, runtime),
                "max_cpu_percent": figures.max_cpu_percent if figures else None,
                "peak_gpu_mem_mb": figures.peak_gpu_mem_mb if figures else None,
            }
        )
    latest = attempts[-1] if attempts else {}
    return {
        "task": task.id,
        "status": task.status.value,
        "attempt": task.attempt,
        "runtime_s": latest.get("runtime_s"),
        "samples": latest.get("samples", 0),
        "peak_rss_mb": latest.get("peak_rss_mb"),
        "mean_cpu_percent": latest.get("mean_cpu_percent"),
        "peak_gpu_mem_mb": latest.get("peak_gpu_mem_mb"),
        "nvml": backend.nvml.available,
        "attempts": attempts,
    }


@router.get("/report")
def report(
    backend: BackendDep,
    since: TimeText = "24h",
    until: TimeText | None = None,
    by: By = "gpu",
    host: HostFilter = None,
) -> dict[str, Any]:
    """GPU-hours busy / idle / paused, task-hours, tasks ended, success rate, queue waits, utilization
    of busy GPUs; one row per ``by`` (a pool's per-task workers nest under it with ``by=worker``).
    Every host of the fleet, or one ``host``'s workers and attempts."""
    start, end = window(since, until, time.time(), MAX_RANGE_S)
    host = check_host(backend.service.store, host)
    history = HistoryReader(backend.service.store, backend.sampler.storage).load(start, end)
    if host is not None:
        history = reports.on_host(history, host)
    modes = {w.id: w.mode.value for w in backend.service.store.list_workers(include_dead=True)}
    answer = reports.compute(reports.with_modes(history, modes), by)
    answer.update(since=iso(start), until=iso(end), host=host)
    return answer


def mount_root(app: FastAPI, backend: Backend) -> None:
    """``/metrics`` and the page; call after every API route is included."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        FleetCollector(
            backend.service.store,
            HistoryReader(backend.service.store, backend.sampler.storage),
            lambda: backend.sampler.latest,
        )
    )

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        index = WEB_DIR / "index.html"
        if not index.is_file():
            raise NotFound(f"the web page is not installed here (no {index})", field="path")
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    if WEB_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
