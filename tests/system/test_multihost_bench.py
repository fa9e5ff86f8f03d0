"""The parts of ``bench/multihost.py`` its figures rest on: the simulated host
claims through the real store as a pool does, and the double-booking check
finds what it looks for."""

from __future__ import annotations

import time
from pathlib import Path

from bench._simhost import HostFigures, SimHost
from bench.multihost import SPECS, double_bookings
from fleet.core.models import Script, TaskSpec, TaskStatus
from fleet.metrics.report import Attempt
from fleet.policy.queuespec import parse_queue_specs
from fleet.store.sqlite import SQLiteStore


def _attempt(task: str, host: str, gpus: tuple[int, ...], start: float, end: float | None) -> Attempt:
    return Attempt(task, 1, f"{host}:gpu", host, gpus, "q", "u", "completed", start, end, start - 0.1)


def test_the_check_finds_an_overlap_on_one_hosts_gpu_and_a_task_run_twice() -> None:
    fine = [
        _attempt("a", "h1", (0, 1), 0.0, 5.0),
        _attempt("b", "h1", (1, 2), 5.0, 6.0),  # GPU 1 again, once "a" has ended
        _attempt("c", "h2", (0, 1), 1.0, 4.0),  # the same indices on another host
    ]
    assert double_bookings(fine) == []
    overlap = [*fine, _attempt("d", "h2", (3, 1), 3.9, None)]
    assert double_bookings(overlap) == ["h2 GPU 1: task c and task d overlap"]
    still_running = [_attempt("e", "h3", (0,), 0.0, None), _attempt("f", "h3", (0,), 100.0, 101.0)]
    assert double_bookings(still_running) == ["h3 GPU 0: task e and task f overlap"]
    assert double_bookings([*fine, _attempt("a", "h2", (7,), 9.0, 10.0)]) == ["task a ran 2 times"]


def test_a_simulated_host_claims_and_ends_tasks_as_a_pool_does(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "fleet.db")
    specs = parse_queue_specs(SPECS)
    for spec in specs:
        store.create_queue(spec.name, [], "test")
    figures = HostFigures()
    host = SimHost("sim007", store, 8, specs, figures)
    assert store.get_worker("sim007:dgpu").gpus == list(range(8))
    asks = [("quad", 4, 0.2), ("dual", 2, 0.2), ("dual", 2, 0.2), ("single", 1, 0.2), ("single", 1, 0.2)]
    ids = [
        store.create_task(TaskSpec(Script(command=["sleep", str(s)], working_dir="/"), gpus=n), queue, "u").id
        for queue, n, s in asks
    ]
    # one start per queue and round, as the pool: the quad, a dual and a single (7 GPUs); the
    # second dual then finds one GPU free and holds it (a reservation), so the second single waits
    host.turn()
    first = {t: store.get_task(t) for t in ids}
    started = [t for t in ids if first[t].status == TaskStatus.IN_PROGRESS]
    assert started == [ids[0], ids[1], ids[3]]
    held = [g for t in started for g in first[t].gpus]
    assert len(held) == len(set(held)) == 7, "each GPU to one task at most"
    assert all(first[t].worker == f"sim007:gpu{','.join(map(str, first[t].gpus))}" for t in started)
    assert len(figures.claim_s) == 3 and figures.lost_s == []
    time.sleep(0.25)
    host.turn()  # their time is up: they end, and the others start
    assert [store.get_task(t).status for t in started] == [TaskStatus.COMPLETED] * 3
    assert [store.get_task(t).status for t in (ids[2], ids[4])] == [TaskStatus.IN_PROGRESS] * 2
    assert double_bookings(store.attempts_between(0, time.time() + 60)) == []
    store.close()
