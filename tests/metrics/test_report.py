"""The report's figures against a history built by hand.

The history is made through the real store API (queues, tasks, claims,
failures with a retry, an abort, worker state changes) in a temporary
database.  The store stamps every change with ``time.time()``; the test
replaces the ``time`` module *as seen by the store* with a clock it sets, so
each event lands exactly when the scenario says.  GPU utilization samples go
in through :class:`MetricsStorage`, as the sampler writes them.  Every
expected figure below is worked out by hand from the scenario.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fleet.store.sqlite as sqlite_store
import fleet.store.sqlite_arrays as sqlite_arrays
import fleet.store.sqlite_base as sqlite_base
import fleet.store.sqlite_tasks as sqlite_tasks
import fleet.store.sqlite_workers as sqlite_workers
from fleet.core.models import Script, TaskSpec, TaskStatus, Worker, WorkerMode, WorkerState
from fleet.core.nvml import GpuSample
from fleet.metrics import report
from fleet.metrics.history import HistoryReader
from fleet.metrics.report import Attempt, History, StateChange, WorkerInfo, compute
from fleet.metrics.samples import HostSample, Snapshot
from fleet.metrics.storage import MetricsStorage
from fleet.store.sqlite import SQLiteStore

H = 3600.0
T0 = 1_800_000_000.0 - 1_800_000_000.0 % H  # the window's start, on the hour
UNTIL = T0 + 10 * H


class Clock:
    """Stands in for the ``time`` module inside the store: ``time()`` is what the test says."""

    def __init__(self) -> None:
        self.now = T0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    for module in (sqlite_store, sqlite_base, sqlite_arrays, sqlite_tasks, sqlite_workers):  # the store's clock
        monkeypatch.setattr(module, "time", fake)
    return fake


@pytest.fixture
def db(tmp_path: Path, clock: Clock) -> Iterator[tuple[SQLiteStore, MetricsStorage]]:
    store = SQLiteStore(tmp_path / "fleet.db")
    storage = MetricsStorage(tmp_path / "fleet.db")
    yield store, storage
    storage.close()
    store.close()


def _worker(wid: str, gpus: list[int] | None, queues: list[str]) -> Worker:
    return Worker(wid, "h", WorkerMode.STATIC, gpus, queues, False, WorkerState.IDLE, "", 0.0)


def _spec(user: str, retries: int = 0) -> TaskSpec:
    return TaskSpec(script=Script(["true"], "/tmp"), name=f"{user}'s job", user=user, retries=retries)


class Scenario:
    """Drives the store like workers would, at the hours (from T0) given."""

    def __init__(self, store: SQLiteStore, clock: Clock) -> None:
        self.store, self.clock = store, clock
        self.workers: dict[str, Worker] = {}

    def at(self, hours: float) -> Scenario:
        self.clock.now = T0 + hours * H
        return self

    def register(self, wid: str, gpus: list[int] | None, queues: list[str]) -> None:
        self.workers[wid] = self.store.register_worker(_worker(wid, gpus, queues), "test")
        self.store.set_worker_state(wid, WorkerState.IDLE, "waiting", "test")

    def submit(self, queue: str, user: str, retries: int = 0) -> str:
        return self.store.create_task(_spec(user, retries), queue, "test").id

    def claim(self, wid: str, expect: str) -> None:
        worker = self.workers[wid]
        task = self.store.claim_next_task(worker, worker.queues, worker.gpus or [])
        assert task is not None and task.id == expect
        self.store.set_worker_state(wid, WorkerState.BUSY, f"running task {task.id}", "test")

    def finish(self, wid: str, task: str, status: TaskStatus, requeue: str | None = None) -> None:
        if status == TaskStatus.STOPPED:
            self.store.request_abort(task, "test", "aborted")
        self.store.finish_task(task, status, exit_code=0, reason="", actor="test", requeue=requeue)
        self.store.set_worker_state(wid, WorkerState.IDLE, "waiting", "test")


def _build(store: SQLiteStore, clock: Clock) -> dict[str, str]:
    s = Scenario(store, clock)
    s.at(-3)
    for queue in ("train", "eval", "cpuq"):
        store.create_queue(queue, [], "test")
    s.at(-2)
    e = s.submit("train", "bob")
    s.at(-1).register("h:gpu0,1", [0, 1], ["train"])
    s.at(-0.9).claim("h:gpu0,1", e)  # E runs across the window's start
    s.at(0).register("h:gpu2", [2], ["eval"])
    s.register("h:cpu", None, ["cpuq"])
    s.at(0.25).finish("h:gpu0,1", e, TaskStatus.COMPLETED)
    s.at(0.5)
    a = s.submit("train", "alice")
    s.at(1)
    b = s.submit("eval", "bob", retries=1)
    s.claim("h:gpu0,1", a)  # waited 0.5 h
    s.at(1 + 10 / H).claim("h:gpu2", b)  # waited 10 s
    s.at(2).finish("h:gpu2", b, TaskStatus.FAILED, requeue="tail")  # queued again at 2 h
    s.at(2 + 30 / H).claim("h:gpu2", b)  # attempt 2 waited 30 s
    s.at(3).finish("h:gpu0,1", a, TaskStatus.COMPLETED)
    c = s.submit("train", "alice")
    s.at(3 + 120 / H).claim("h:gpu0,1", c)  # waited 120 s
    s.at(4).finish("h:gpu0,1", c, TaskStatus.STOPPED)
    s.finish("h:gpu2", b, TaskStatus.COMPLETED)
    s.at(5)
    f = s.submit("cpuq", "carol")
    s.at(5 + 5 / H).claim("h:cpu", f)  # waited 5 s
    s.at(5.5).finish("h:cpu", f, TaskStatus.COMPLETED)
    s.at(6)
    store.set_worker_state("h:gpu2", WorkerState.PAUSED, "downtime", "schedule")
    s.at(8)
    store.set_worker_state("h:gpu2", WorkerState.IDLE, "waiting", "schedule")
    s.at(9)
    d = s.submit("eval", "bob")
    s.at(9.5).claim("h:gpu2", d)  # waited 0.5 h; still running at the window's end
    s.at(12)  # after the window: nothing here may count
    late = s.submit("eval", "bob")
    s.at(12.1).finish("h:gpu2", d, TaskStatus.COMPLETED)
    s.claim("h:gpu2", late)
    return {"a": a, "b": b, "c": c, "d": d, "e": e, "f": f}


def _util(storage: MetricsStorage) -> None:
    """GPU 0 at 80 % while A runs, GPU 2 at 5 % while B's 2nd attempt runs, GPU 1 at 0 % while idle."""

    def write(at: float, gpu: int, util: float) -> None:
        host = HostSample("h", 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, None, None)
        sample = GpuSample(gpu, None, util, 1.0, 2.0, None, None)
        storage.write(Snapshot(at, host, (sample,)))

    for k in range(10):
        write(T0 + 1.5 * H + k * 60, 0, 80.0)
        write(T0 + 3 * H + k * 60, 2, 5.0)
        write(T0 + 6 * H + k * 60, 1, 0.0)


def _rows(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in answer["rows"]}


BUSY_01 = 0.25 + 2 + (1 - 120 / H)  # E (inside the window), A, C
BUSY_2 = (1 - 10 / H) + (2 - 30 / H) + 0.5  # B twice, D until the window's end


def test_report_figures_against_a_constructed_history(db: tuple[SQLiteStore, MetricsStorage], clock: Clock) -> None:
    store, storage = db
    _build(store, clock)
    _util(storage)
    history = HistoryReader(store, storage).load(T0, UNTIL)

    totals = compute(history)["totals"]
    assert totals["busy_gpu_hours"] == pytest.approx(2 * BUSY_01 + BUSY_2, abs=1e-3)
    assert totals["idle_gpu_hours"] == pytest.approx(2 * (10 - BUSY_01) + (10 - BUSY_2 - 2), abs=1e-3)
    assert totals["paused_gpu_hours"] == pytest.approx(2.0, abs=1e-3)
    # E, A, B#2, F completed; B#1 failed; C stopped; D still runs
    assert (totals["completed"], totals["failed"], totals["stopped"]) == (4, 1, 1)
    assert totals["success_rate"] == pytest.approx(0.8)
    # waits of attempts that started in the window: 5, 10, 30, 120, 1800, 1800 s
    assert totals["waits"] == 6
    assert totals["wait_p50_s"] == pytest.approx(75.0, abs=0.01)
    assert totals["wait_p95_s"] == pytest.approx(1800.0, abs=0.01)
    assert totals["busy_gpu_util_percent"] == pytest.approx(42.5)  # ten samples at 80 %, ten at 5 %
    assert totals["busy_low_util_gpu_hours"] == pytest.approx(10 / 60, abs=1e-3)

    by_gpu = _rows(compute(history, "gpu"))
    assert set(by_gpu) == {"h:gpu0", "h:gpu1", "h:gpu2"}
    assert by_gpu["h:gpu0"]["busy_gpu_hours"] == pytest.approx(BUSY_01, abs=1e-3)
    assert by_gpu["h:gpu1"]["idle_gpu_hours"] == pytest.approx(10 - BUSY_01, abs=1e-3)
    assert by_gpu["h:gpu2"]["paused_gpu_hours"] == pytest.approx(2.0, abs=1e-3)
    assert by_gpu["h:gpu0"]["busy_gpu_util_percent"] == pytest.approx(80.0)
    assert by_gpu["h:gpu1"]["busy_gpu_util_percent"] is None  # its samples were all taken while idle
    assert by_gpu["h:gpu2"]["busy_gpu_util_percent"] == pytest.approx(5.0)
    assert (by_gpu["h:gpu2"]["completed"], by_gpu["h:gpu2"]["failed"]) == (1, 1)

    by_worker = _rows(compute(history, "worker"))
    assert by_worker["h:gpu0,1"]["busy_gpu_hours"] == pytest.approx(2 * BUSY_01, abs=1e-3)
    assert by_worker["h:gpu2"]["idle_gpu_hours"] == pytest.approx(10 - BUSY_2 - 2, abs=1e-3)
    assert by_worker["h:cpu"]["completed"] == 1 and by_worker["h:cpu"]["busy_gpu_hours"] == 0

    by_queue = _rows(compute(history, "queue"))
    assert by_queue["train"]["busy_gpu_hours"] == pytest.approx(2 * BUSY_01, abs=1e-3)
    assert by_queue["train"]["idle_gpu_hours"] is None  # an idle GPU belongs to no queue
    assert by_queue["eval"]["wait_p50_s"] == pytest.approx(30.0, abs=0.01)  # 10, 30, 1800
    assert by_queue["cpuq"]["wait_p50_s"] == pytest.approx(5.0, abs=0.01)

    by_user = _rows(compute(history, "user"))
    assert by_user["alice"]["busy_gpu_hours"] == pytest.approx(2 * (2 + 1 - 120 / H), abs=1e-3)
    assert by_user["bob"]["busy_gpu_hours"] == pytest.approx(2 * 0.25 + BUSY_2, abs=1e-3)
    assert (by_user["alice"]["completed"], by_user["alice"]["stopped"]) == (1, 1)
    assert by_user["carol"]["success_rate"] == 1.0


def test_a_window_before_anything_happened_is_empty(db: tuple[SQLiteStore, MetricsStorage], clock: Clock) -> None:
    store, storage = db
    _build(store, clock)
    totals = compute(HistoryReader(store, storage).load(T0 - 100 * H, T0 - 50 * H))["totals"]
    assert totals["busy_gpu_hours"] == 0 and totals["idle_gpu_hours"] == 0
    assert totals["success_rate"] is None and totals["wait_p50_s"] is None


def test_dispatch_latencies_are_claim_minus_queued(db: tuple[SQLiteStore, MetricsStorage], clock: Clock) -> None:
    store, storage = db
    _build(store, clock)
    reader = HistoryReader(store, storage)
    last, latencies = reader.dispatch_latencies(0)
    assert sorted(round(x) for x in latencies) == sorted([3960, 1800, 10, 30, 120, 5, 1800, 360])
    assert reader.dispatch_latencies(last) == (last, [])  # incremental: nothing new
    assert reader.ended_counts() == {"completed": 5, "failed": 1, "stopped": 1}


def test_a_pools_tasks_count_for_the_pool_and_nest_under_it(
    db: tuple[SQLiteStore, MetricsStorage], clock: Clock
) -> None:
    """A dynamic pool ``h:dgpu`` over GPUs 0-3 runs each task under a per-task id
    (``h:gpu0,1``, ``h:gpu2``) that is no worker of its own.  The pool's GPU time
    is busy while its tasks hold its GPUs (not idle as well: 40 GPU-hours of
    window, not more), and ``by="worker"`` shows the pool with its per-task
    workers nested under it, never as rows of their own."""
    store, storage = db
    s = Scenario(store, clock)
    s.at(-1)
    store.create_queue("any", [], "test")
    pool = store.register_worker(
        Worker("h:dgpu", "h", WorkerMode.DYNAMIC, [0, 1, 2, 3], ["any"], False, WorkerState.IDLE, "", 0.0), "test"
    )
    store.set_worker_state("h:dgpu", WorkerState.IDLE, "waiting", "test")
    x, y, z = (s.submit("any", user) for user in ("alice", "bob", "alice"))
    s.at(1)
    assert store.claim_task(x, pool, [0, 1], "h:gpu0,1") is not None
    s.at(2)
    assert store.claim_task(y, pool, [2], "h:gpu2") is not None
    s.at(3).store.finish_task(x, TaskStatus.COMPLETED, exit_code=0, reason="", actor="test")
    s.at(4).store.finish_task(y, TaskStatus.FAILED, exit_code=1, reason="", actor="test")
    s.at(5)
    assert store.claim_task(z, pool, [0, 1], "h:gpu0,1") is not None  # still running at the window's end
    history = report.with_modes(HistoryReader(store, storage).load(T0, UNTIL), {"h:dgpu": "dynamic"})

    totals = compute(history)["totals"]
    assert totals["busy_gpu_hours"] == pytest.approx(2 * 2 + 2 + 2 * 5, abs=1e-3)
    assert totals["idle_gpu_hours"] == pytest.approx(4 * 10 - 16, abs=1e-3)

    answer = compute(history, "worker")
    (row,) = answer["rows"]
    assert row["key"] == "h:dgpu" and row["parent"] is None
    assert row["busy_gpu_hours"] == pytest.approx(16, abs=1e-3)
    assert row["idle_gpu_hours"] == pytest.approx(24, abs=1e-3)
    assert (row["completed"], row["failed"]) == (1, 1)
    children = {c["key"]: c for c in row["children"]}
    assert list(children) == ["h:gpu0,1", "h:gpu2"]
    assert children["h:gpu0,1"]["busy_gpu_hours"] == pytest.approx(2 * 2 + 2 * 5, abs=1e-3)
    assert children["h:gpu2"]["busy_gpu_hours"] == pytest.approx(2, abs=1e-3)
    assert children["h:gpu0,1"]["completed"] == 1 and children["h:gpu2"]["failed"] == 1
    assert all(c["parent"] == "h:dgpu" and c["idle_gpu_hours"] is None for c in children.values())

    by_gpu = _rows(compute(history, "gpu"))
    assert by_gpu["h:gpu0"]["busy_gpu_hours"] == pytest.approx(7, abs=1e-3)
    assert by_gpu["h:gpu0"]["idle_gpu_hours"] == pytest.approx(3, abs=1e-3)
    assert by_gpu["h:gpu3"]["idle_gpu_hours"] == pytest.approx(10, abs=1e-3)
    # without the modes (an older caller): the pool is still found by its GPUs
    unknown = compute(HistoryReader(store, storage).load(T0, UNTIL), "worker")
    assert [r["key"] for r in unknown["rows"]] == ["h:dgpu"]


def test_a_per_task_id_that_was_once_a_static_worker_goes_to_the_live_pool() -> None:
    """``h:gpu0`` was a static worker, stopped at 10 s; a pool over GPUs 0-1 then runs
    a task as ``h:gpu0``: the pool's, since the static worker was dead by then.
    The services worker owns ``h:service:<task>``."""
    history = History(
        since=0.0,
        until=100.0,
        workers=[
            WorkerInfo("h:gpu0", "h", (0,), "static"),
            WorkerInfo("h:dgpu", "h", (0, 1), "dynamic"),
            WorkerInfo("h:services", "h", (), "services"),
        ],
        changes=[
            StateChange("h:gpu0", -5.0, "idle"),
            StateChange("h:gpu0", 10.0, "dead"),
            StateChange("h:dgpu", 20.0, "idle"),
            StateChange("h:services", 0.0, "idle"),
        ],
        attempts=[
            Attempt("a", 1, "h:gpu0", "h", (0,), "q", "u", "completed", 1.0, 9.0, 0.0),
            Attempt("b", 1, "h:gpu0", "h", (0,), "q", "u", "completed", 30.0, 50.0, 25.0),
            Attempt("s", 1, "h:service:s", "h", (), "svc", "u", "completed", 30.0, 40.0, 25.0),
        ],
    )
    assert report.owners(history) == {("a", 1): "h:gpu0", ("b", 1): "h:dgpu", ("s", 1): "h:services"}
    rows = _rows(compute(history, "worker"))
    assert rows["h:gpu0"]["children"] == [] and rows["h:gpu0"]["busy_gpu_hours"] == pytest.approx(8 / H, abs=1e-4)
    assert [c["key"] for c in rows["h:dgpu"]["children"]] == ["h:gpu0"]
    assert [c["key"] for c in rows["h:services"]["children"]] == ["h:service:s"]


# -- the pure parts, on a history written out directly -------------------------------------
def test_by_host_sums_each_hosts_gpus_and_counts_cpu_work_in_task_hours() -> None:
    """Host ``a`` has a 2-GPU worker, idle 0..100 s but for one 2-GPU task (10..40 s) and
    one 1-GPU task (50..60 s); host ``b`` has a CPU-only worker that ran one task (20..80 s)
    and host ``c`` one that ran nothing.  GPU-hours are ``a``'s alone; ``b``'s work shows
    in task-hours; ``c`` is listed (a live worker) with nothing."""
    history = History(
        since=0.0,
        until=100.0,
        workers=[WorkerInfo("a:gpu0,1", "a", (0, 1)), WorkerInfo("b:cpu", "b", ()), WorkerInfo("c:cpu", "c", ())],
        changes=[StateChange(w, -5.0, "idle") for w in ("a:gpu0,1", "b:cpu", "c:cpu")],
        attempts=[
            Attempt("t1", 1, "a:gpu0,1", "a", (0, 1), "q", "u", "completed", 10.0, 40.0, 5.0),
            Attempt("t2", 1, "a:gpu0,1", "a", (0,), "q", "u", "failed", 50.0, 60.0, 45.0),
            Attempt("t3", 1, "b:cpu", "b", (), "q", "v", "completed", 20.0, 80.0, 0.0),
        ],
    )
    answer = compute(history, "host")
    rows = _rows(answer)
    assert list(rows) == ["a", "b", "c"]
    assert rows["a"]["busy_gpu_hours"] == pytest.approx((2 * 30 + 10) / H, abs=1e-4)
    assert rows["a"]["idle_gpu_hours"] == pytest.approx((200 - 70) / H, abs=1e-4)
    assert rows["a"]["task_hours"] == pytest.approx(40 / H, abs=1e-4)
    assert (rows["a"]["completed"], rows["a"]["failed"]) == (1, 1)
    assert rows["b"]["busy_gpu_hours"] == 0 and rows["b"]["idle_gpu_hours"] == 0
    assert rows["b"]["task_hours"] == pytest.approx(60 / H, abs=1e-4) and rows["b"]["completed"] == 1
    assert rows["b"]["wait_p50_s"] == pytest.approx(20.0)
    assert rows["c"]["task_hours"] == 0 and rows["c"]["completed"] == 0
    assert answer["totals"]["task_hours"] == pytest.approx(100 / H, abs=1e-4)
    assert answer["totals"]["busy_gpu_hours"] == rows["a"]["busy_gpu_hours"]


def test_states_split_time_and_busy_wins() -> None:
    """Busy (an attempt) counts even while the worker says paused or stopping."""
    history = History(
        since=0.0,
        until=100.0,
        workers=[WorkerInfo("w", "h", (0,))],
        changes=[
            StateChange("w", -5.0, "idle"),
            StateChange("w", 20.0, "paused"),
            StateChange("w", 60.0, "stopping"),
            StateChange("w", 80.0, "dead"),
        ],
        attempts=[Attempt("t", 1, "w", "h", (0,), "q", "u", "stopped", 50.0, 70.0, 40.0)],
    )
    totals = compute(history)["totals"]
    assert totals["busy_gpu_hours"] == pytest.approx(20 / H, abs=1e-4)
    assert totals["paused_gpu_hours"] == pytest.approx(30 / H, abs=1e-4)  # 20..50
    assert totals["idle_gpu_hours"] == pytest.approx(20 / H, abs=1e-4)  # 0..20
    assert totals["wait_p50_s"] == pytest.approx(10.0)


def test_percentile_and_intervals() -> None:
    assert report.percentile([], 50) is None
    assert report.percentile([3.0], 95) == 3.0
    assert report.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert report.merge([(5, 6), (0, 2), (1, 3), (3, 3)]) == [(0, 3), (5, 6)]
    assert report.overlap([(0, 10)], [(2, 3), (9, 12)]) == 2
    with pytest.raises(ValueError, match="by 'team'"):
        compute(History(0.0, 1.0, [], [], []), "team")
    assert math.isclose(report.length([(0, 1.5), (2, 3)]), 2.5)
