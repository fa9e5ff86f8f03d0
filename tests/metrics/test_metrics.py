"""Sampling, storage (roll-ups and retention), the metrics API and the Prometheus text.

The sampler is run against real processes (a task's process group of two)
and the real host.  No GPU can exist on the machine these tests run on, so
the GPU part is checked with :class:`StandInNvmlLib`, which stands in for the
``pynvml`` module (the hardware), and nothing else is faked.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from fleet.core.config import MetricsConfig
from fleet.core.models import Script, TaskSpec, Worker, WorkerMode, WorkerState
from fleet.core.nvml import GpuSample, Nvml
from fleet.core.procs import identity
from fleet.metrics.history import HistoryReader
from fleet.metrics.prometheus import FleetCollector
from fleet.metrics.sampler import Sampler
from fleet.metrics.samples import KINDS, HostSample, Snapshot, TaskSample
from fleet.metrics.storage import MetricsStorage
from fleet.store.sqlite import SQLiteStore
from tests.conftest import CONFIG, Fleet

MB = 1024 * 1024

# A task: a process group of two, the leader busy and holding ~64 MB, its child asleep.
TASK_CODE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
block = bytearray(64 * 1024 * 1024)
print(child.pid, flush=True)
end = time.time() + 60
while time.time() < end:
    pass
"""


class StandInNvmlLib:
    """Stands in for the ``pynvml`` module on a host with two GPUs: hardware that
    cannot exist where these tests run.  GPU 0 runs one of the task's processes;
    GPU 1 cannot report its power draw, as many cards cannot."""

    NVML_TEMPERATURE_GPU = 0

    class NotSupported(Exception):
        pass

    def __init__(self, task_pid: int) -> None:
        self.task_pid = task_pid

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return "Stand-in GPU"

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-stand-in-{handle}"

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=87 if handle == 0 else 0, memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        used = 3 * 1024 * MB if handle == 0 else 0
        return SimpleNamespace(total=16 * 1024 * MB, used=used, free=16 * 1024 * MB - used)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return 65 if handle == 0 else 30

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        if handle == 1:
            raise self.NotSupported("Not Supported")
        return 210_000  # milliwatts

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=self.task_pid, usedGpuMemory=2048 * MB)] if handle == 0 else []

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        return []


class NoDriver:
    """Stands in for ``pynvml`` on a host without an NVIDIA driver."""

    def nvmlInit(self) -> None:
        raise OSError("NVML Shared Library Not Found")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[SQLiteStore, str, list[int]]]:
    """A store with worker ``h:gpu0`` running a real task: (store, task id, [leader, child] pids)."""
    store = SQLiteStore(tmp_path / "fleet.db")
    store.create_queue("q", [], "test")
    task = store.create_task(TaskSpec(script=Script(["python"], str(tmp_path))), "q", "test")
    worker = store.register_worker(
        Worker("h:gpu0", "h", WorkerMode.STATIC, [0], ["q"], False, WorkerState.IDLE, "", 0.0), "test"
    )
    assert store.claim_next_task(worker, ["q"], [0]) is not None
    store.set_worker_state(worker.id, WorkerState.BUSY, f"running task {task.id}", "test")
    proc = subprocess.Popen(
        [sys.executable, "-c", TASK_CODE], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        store.set_task_process(task.id, proc.pid, identity(proc.pid))
        yield store, task.id, [proc.pid, child]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        store.close()


def _sampler(store: SQLiteStore, tmp_path: Path, nvml: Nvml) -> Sampler:
    return Sampler(store, MetricsStorage(store.path), nvml, tmp_path, "h", MetricsConfig(interval=0.2))


def _two_ticks(sampler: Sampler) -> Snapshot:
    sampler.tick()
    time.sleep(0.5)
    return sampler.tick()


def test_sampler_without_nvml(running: tuple[SQLiteStore, str, list[int]], tmp_path: Path) -> None:
    store, task_id, pids = running
    sampler = _sampler(store, tmp_path, Nvml(lib=NoDriver()))
    snap = _two_ticks(sampler)
    assert not sampler.nvml.available and snap.gpus == ()
    host = snap.host
    assert 0 <= host.cpu_percent <= 100 and host.load1 >= 0
    assert 0 < host.mem_used_mb < host.mem_total_mb
    assert host.disk_free_gb is not None and host.disk_free_gb > 0
    assert host.net_rx_bps is not None and host.net_rx_bps >= 0  # a rate, from the second tick on

    (task,) = snap.tasks
    assert task.task == task_id and sorted(task.pids) == sorted(pids)  # the whole process group
    assert task.cpu_percent > 5  # the leader spins (on a loaded machine it gets less than a core)
    assert task.rss_mb > 64
    assert task.gpu_mem_mb is None
    (worker,) = snap.workers
    assert (worker.state, worker.gpu_util_percent, worker.cpu_percent) == ("busy", None, task.cpu_percent)

    counts = sampler.storage.counts()
    assert (counts["host.raw"], counts["worker.raw"], counts["task.raw"], counts["gpu.raw"]) == (2, 2, 2, 0)
    (usage,) = sampler.storage.task_usage(task_id)
    assert (
        usage.samples == 2
        and usage.peak_rss_mb is not None
        and usage.peak_rss_mb > 64
        and usage.peak_gpu_mem_mb is None
    )
    assert sampler.cost.ticks == 2 and sampler.cost.wall_max < 5.0
    sampler.storage.close()


def test_sampler_with_nvml_stand_in(running: tuple[SQLiteStore, str, list[int]], tmp_path: Path) -> None:
    store, task_id, pids = running
    sampler = _sampler(store, tmp_path, Nvml(lib=StandInNvmlLib(task_pid=pids[1])))
    snap = _two_ticks(sampler)
    gpu0, gpu1 = snap.gpus
    assert (gpu0.utilization_percent, gpu0.memory_used_mb, gpu0.memory_total_mb) == (87.0, 3072.0, 16384.0)
    assert (gpu0.temperature_c, gpu0.power_w, gpu0.uuid) == (65.0, 210.0, "GPU-stand-in-0")
    assert gpu0.processes[0].pid == pids[1] and gpu0.processes[0].memory_used_mb == 2048.0
    assert gpu1.power_w is None and gpu1.processes == ()  # unsupported reading: None, not an error
    (task,) = snap.tasks
    assert task.gpu_mem_mb == 2048.0
    (worker,) = snap.workers
    assert (worker.gpu_util_percent, worker.gpu_mem_mb) == (87.0, 3072.0)  # its GPU 0 only

    series = {s["id"]: s for s in sampler.storage.series(KINDS["gpu"], snap.at - 60, snap.at + 1, 1)}
    assert set(series) == {"0", "1"} and series["0"]["values"]["util_percent"][-1] == 87.0
    assert sampler.storage.task_usage(task_id)[0].peak_gpu_mem_mb == 2048.0

    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(store, HistoryReader(store, sampler.storage), lambda: sampler.latest))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    util = {s.labels["gpu"]: s.value for s in families["fleet_gpu_utilization_percent"].samples}
    assert util == {"0": 87.0, "1": 0.0}
    assert [s.labels["gpu"] for s in families["fleet_gpu_power_watts"].samples] == ["0"]
    rss = families["fleet_task_rss_bytes"].samples[0]
    assert rss.labels == {"task": task_id} and rss.value > 64 * MB
    sampler.storage.close()


def test_nvml_without_a_driver_degrades() -> None:
    nvml = Nvml(lib=NoDriver())
    assert nvml.sample() == [] and not nvml.available and "Not Found" in nvml.error


# -- storage: roll-ups and retention, with the time given ------------------------------------
def _snap(at: float, cpu: float, task_rss: float, host_name: str = "h") -> Snapshot:
    host = HostSample(host_name, cpu, 0.5, 100.0, 1000.0, 10.0, 50.0, 1.0, 2.0)
    gpu = GpuSample(0, None, cpu, 1.0, 2.0, None, None)
    task = TaskSample("ab" * 16, 2, "w", (1,), cpu, task_rss, None)
    return Snapshot(at, host, (gpu,), (), (task,))


def test_rollup_and_retention(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "fleet.db").close()  # creates the schema
    storage = MetricsStorage(tmp_path / "fleet.db")
    t0 = 1_800_000_000.0 - 1_800_000_000.0 % 60
    for k in range(18):  # three minutes, every 10 s: cpu = k
        storage.write(_snap(t0 + 10 * k, float(k), 100.0 + k))
    day, month = 24 * 3600.0, 30 * 86400.0

    done = storage.maintain(t0 + 185, day, month)
    assert done.rolled_until == t0 + 180 and done.rolled_rows == 3 * 3  # 3 minutes x (host, gpu, task)
    assert storage.maintain(t0 + 190, day, month).rolled_rows == 0  # each minute once
    (host,) = storage.series(KINDS["host"], t0, t0 + 180, 60)
    assert host["t"] == [t0, t0 + 60, t0 + 120]
    assert host["values"]["cpu_percent"] == [2.5, 8.5, 14.5]  # averages of 0..5, 6..11, 12..17
    (task,) = storage.series(KINDS["task"], t0, t0 + 180, 60)
    assert task["values"]["attempt"] == [2, 2, 2] and task["values"]["rss_mb"] == [102.5, 108.5, 114.5]
    (raw,) = storage.series(KINDS["host"], t0, t0 + 30, 10)  # finer than a minute: raw samples
    assert raw["values"]["cpu_percent"] == [0.0, 1.0, 2.0]

    later = storage.maintain(t0 + day + 200, day, month)  # past raw retention
    assert later.deleted_raw == 3 * 18 and storage.counts()["host.raw"] == 0
    (coarse,) = storage.series(KINDS["host"], t0, t0 + 180, 10)  # no raw left: the roll-ups answer
    assert coarse["values"]["cpu_percent"] == [2.5, 8.5, 14.5]
    (usage,) = storage.task_usage("ab" * 16)  # a task's figures outlive its samples
    assert (usage.samples, usage.peak_rss_mb, usage.mean_cpu_percent) == (18, 117.0, 8.5)

    gone = storage.maintain(t0 + month + 200, day, month)
    assert gone.deleted_rollups == 9 and storage.series(KINDS["host"], t0, t0 + 180, 60) == []
    storage.close()


def test_a_minute_is_rolled_up_only_after_every_hosts_last_tick_is_in(tmp_path: Path) -> None:
    """Two hosts write into one store; host ``h`` maintains 1 s after a minute ended, then
    host ``late``'s tick for that minute's last seconds arrives (a slow tick, or a clock a
    little behind).  The minute is rolled up later, with both hosts' samples in it."""
    store = SQLiteStore(tmp_path / "fleet.db")
    t0 = 1_800_000_000.0 - 1_800_000_000.0 % 60
    now = [t0 + 61]
    sampler = Sampler(
        store, MetricsStorage(store.path), Nvml(lib=NoDriver()), tmp_path, "h", MetricsConfig(), clock=lambda: now[0]
    )
    try:
        sampler.storage.write(_snap(t0 + 30, 10.0, 1.0))
        sampler.tick()  # at t0 + 61
        sampler.storage.write(_snap(t0 + 58, 30.0, 1.0, host_name="late"))
        now[0] = t0 + 90
        sampler.tick()
        rolled = {s["id"]: s for s in sampler.storage.series(KINDS["host"], t0, t0 + 60, 60)}
        assert sampler.storage.watermark() == t0 + 60
        assert rolled["late"]["values"]["cpu_percent"] == [30.0]  # in the roll-up, not lost under the watermark
        assert sampler.storage.counts()["host.rollup"] == 2  # one row per host for the minute
    finally:
        sampler.stop()
        store.close()


# -- the API, the CLI and /metrics on a real manager ------------------------------------------
FAST = CONFIG + "fleet { metrics { interval: 0.2 } }\n"
WORK = "import time\nblock = bytearray(64 * 1024 * 1024)\nend = time.time() + 1.5\nwhile time.time() < end:\n    pass\n"


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_api_report_cli_and_prometheus(fleet: Fleet) -> None:
    (fleet.root / "fleet.conf").write_text(FAST)
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    task = fleet.submit("q", sys.executable, "-c", WORK)
    assert fleet.cli("wait", task, "--timeout", "60").returncode == 0

    with fleet.api() as api:
        figures = api.get(f"/metrics/tasks/{task[:8]}").raise_for_status().json()
        assert figures["task"] == task and figures["samples"] >= 3
        assert figures["peak_rss_mb"] > 64 and figures["mean_cpu_percent"] > 5
        assert 1.4 < figures["runtime_s"] < 30 and figures["peak_gpu_mem_mb"] is None
        series = api.get("/metrics", params={"kind": "task", "id": task, "since": "5m", "step": 1}).json()
        assert series["step"] == 1 and series["series"][0]["id"] == task
        assert max(series["series"][0]["values"]["rss_mb"]) > 64
        host = api.get("/metrics", params={"since": "10m"}).json()
        assert host["kind"] == "host" and host["step"] >= 1 and host["series"][0]["t"]
        current = api.get("/metrics/current").json()
        assert current["sampler"]["ticks"] > 3 and current["snapshot"]["host"]["mem_total_mb"] > 0

        bad_metrics: list[tuple[dict[str, str | int], str]] = [
            ({"kind": "disk"}, "kind"),
            ({"step": 0}, "step"),
            ({"since": "yesterday"}, "since"),
            ({"since": "1h", "until": "2h"}, "since"),
            ({"since": "30d", "step": 1}, "step"),
            ({"kind": "gpu", "id": "x"}, "id"),
            ({"kind": "task", "id": "zz"}, "id"),
            ({"kind": "worker", "id": "../etc"}, "id"),
        ]
        for params, field in bad_metrics:
            answer = api.get("/metrics", params=params)
            assert answer.status_code == 422 and answer.json()["field"] == field, (params, answer.text)
        for query, name in [({"by": "team"}, "by"), ({"since": "1000d"}, "since"), ({"until": "x"}, "until")]:
            answer = api.get("/report", params=query)
            assert answer.status_code == 422 and answer.json()["field"] == name, (query, answer.text)
        assert api.get("/metrics/tasks/nothex").status_code == 422
        assert api.get("/metrics/tasks/abcd1234").status_code == 404

        report = api.get("/report", params={"by": "queue"}).json()
        assert report["totals"]["completed"] == 1 and report["rows"][0]["key"] == "q"

    with fleet.api(prefix="") as root:
        families = _families(root.get("/metrics").raise_for_status().text)
    ended = {s.labels["status"]: s.value for s in families["fleet_task_attempts_ended"].samples}
    assert ended == {"completed": 1.0, "failed": 0.0, "stopped": 0.0}
    latency = {s.name: s.value for s in families["fleet_dispatch_latency_seconds"].samples if not s.labels.get("le")}
    assert latency["fleet_dispatch_latency_seconds_count"] == 1.0
    assert 0 <= latency["fleet_dispatch_latency_seconds_sum"] < 5
    pending = {s.labels["queue"]: s.value for s in families["fleet_queue_pending_tasks"].samples}
    assert pending == {"q": 0.0}
    states = {s.labels["state"]: s.value for s in families["fleet_worker_state"].samples}
    assert states["idle"] == 1.0 and states["busy"] == 0.0
    assert families["fleet_host_memory_total_bytes"].samples[0].value > 0

    shown = fleet.ok("show", task)
    assert "peak RSS" in shown and "mean CPU" in shown and "(no NVML)" in shown
    assert json.loads(fleet.ok("show", task, "--json"))["usage"]["peak_rss_mb"] > 64
    as_json = json.loads(fleet.ok("report", "--since", "1h", "--by", "worker", "--json"))
    assert as_json["rows"][0]["key"].endswith(":gpu0") and as_json["totals"]["success_rate"] == 1.0
    rows = list(csv.DictReader(io.StringIO(fleet.ok("report", "--by", "queue", "--csv"))))
    assert [r["key"] for r in rows] == ["q", "total"] and rows[0]["completed"] == "1"
    assert "GPU-hours" in fleet.ok("report", "--by", "gpu")
    bad = fleet.cli("report", "--since", "soon")
    assert bad.returncode == 2 and "since 'soon'" in bad.stderr
    assert fleet.cli("report", "--json", "--csv").returncode == 2


def test_page_files_are_open_but_data_needs_the_token(fleet: Fleet) -> None:
    """The page's files (no data in them) load without credentials; the data and
    the Prometheus text need the token (made by the manager at its first start)."""
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    with fleet.api(prefix="", auth=False) as anonymous:
        assert anonymous.get("/").status_code == 200
        assert anonymous.get("/static/app.js").status_code == 200
        for path in ("/api/v1/workers", "/api/v1/metrics", "/api/v1/report", "/metrics"):
            assert anonymous.get(path).status_code == 401, path
    with fleet.api(prefix="") as root:
        assert root.get("/metrics").status_code == 200
        assert root.get("/api/v1/report").status_code == 200
