"""Task logs shipped into a shared (PostgreSQL) store by the task runner, with
real task processes: byte for byte and bounded as the file is, in batches,
one log across attempts on two hosts, through a server outage without
holding the task up, and never into an attempt that replaced this one."""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from fleet.core.config import Config
from fleet.core.errors import StoreUnavailable
from fleet.core.home import Home
from fleet.core.models import Runner, Script, Task, TaskSpec, TaskStatus, Worker
from fleet.store.postgres import PostgresStore
from fleet.store.sqlite import SQLiteStore
from fleet.worker import logship
from fleet.worker.runner import RunnerProfile, TaskRunner
from tests.factories import live_worker
from tests.pgserver import server_or_skip


def worker(host: str) -> Worker:
    """The worker a task runs as on ``host`` (``fleetctl execute``'s: no row of its own)."""
    return dataclasses.replace(live_worker(f"{host}:execute", None, []), host=host)


def python_task(store: PostgresStore | SQLiteStore, code: str, cwd: Path) -> str:
    spec = TaskSpec(script=Script(command=[sys.executable, "-c", code], working_dir=str(cwd)))
    return store.create_task(spec, None, "test").id


def run(runner: TaskRunner, task: Task, host: str) -> None:
    """The runner's loop, as a worker's (without its wake-ups): until the task's end is recorded."""
    runner.start(task, worker(host))
    while runner.proc is not None or runner.ending is not None:
        runner.wait((), 0.1)
        runner.watch(True)
        runner.flush()


def runner_at(root: Path, store: PostgresStore | SQLiteStore, host: str, log_max_mb: float = 1024) -> TaskRunner:
    home = Home(root).ensure()
    config = Config()
    config = dataclasses.replace(config, fleet=dataclasses.replace(config.fleet, log_max_mb=log_max_mb))
    return TaskRunner(home, store, config, RunnerProfile(f"{host}:execute", Runner.EXECUTE, contain=False))


def start(runner: TaskRunner, task_id: str, host: str) -> Task:
    return runner.start_here(task_id, worker(host), [])


def chunk_count(url: str, task_id: str) -> int:
    with psycopg.connect(url) as pg:
        row = pg.execute("SELECT count(*) FROM log_chunks WHERE task_id = %s", (task_id,)).fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
def pg(pg_url: str) -> Iterator[PostgresStore]:
    store = PostgresStore(pg_url)
    yield store
    store.close()


def test_the_store_holds_the_files_bytes_batched_and_bounded_as_the_file_is(
    pg: PostgresStore, pg_url: str, tmp_path: Path
) -> None:
    # 6000 lines with invalid UTF-8 and a NUL, about 600 KB, past a 0.4 MB limit
    code = "import sys\nfor i in range(6000): sys.stdout.buffer.write(b'line %05d \\xff\\xfe\\x00 ' % i + b'x' * 80 + b'\\n')"
    runner = runner_at(tmp_path / "a", pg, "a", log_max_mb=0.4)
    task_id = python_task(pg, code, tmp_path)
    run(runner, start(runner, task_id, "a"), "a")
    assert pg.get_task(task_id).status == TaskStatus.COMPLETED
    local = runner.home.task_log(task_id).read_bytes()
    assert b"log limit of 0.4 MB reached; further output is dropped (fleet.log_max_mb)" in local
    assert b"attempt 1 ended: completed" in local
    stored = pg.read_log(task_id, 0, 10 * len(local))
    assert stored.data == local
    assert chunk_count(pg_url, task_id) < 6000 / 20, "a transaction per line or so, not per batch"


def test_one_log_across_attempts_on_two_hosts(pg: PostgresStore, tmp_path: Path) -> None:
    code = "import sys; print('output of', sys.argv[0]); sys.stdout.buffer.write(b'\\xc3\\x28\\n'); sys.exit(3)"
    a, b = runner_at(tmp_path / "a", pg, "a"), runner_at(tmp_path / "b", pg, "b")
    task_id = python_task(pg, code, tmp_path)
    run(a, start(a, task_id, "a"), "a")
    first = a.home.task_log(task_id).read_bytes()
    assert pg.read_log(task_id, 0, 1 << 20).data == first
    run(b, start(b, task_id, "b"), "b")  # attempt 2, on another host
    second = b.home.task_log(task_id).read_bytes()
    assert second.startswith(first), "host b's file begins with the attempt that ran on host a"
    assert b"attempt 2 on worker b:execute (host b" in second[len(first) :]
    assert pg.read_log(task_id, 0, 1 << 20).data == second
    assert a.home.task_log(task_id).read_bytes() == first
    run(a, start(a, task_id, "a"), "a")  # attempt 3, back on host a: its file catches up first
    third = a.home.task_log(task_id).read_bytes()
    assert third.startswith(second)
    assert pg.read_log(task_id, 0, 1 << 20).data == third
    assert pg.get_task(task_id).attempt == 3


def test_an_outage_neither_stops_nor_holds_the_task_and_shipping_catches_up(tmp_path: Path) -> None:
    go = tmp_path / "go"
    code = (
        "import os, sys, time\n"
        "print('before the outage', flush=True)\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.02)\n"
        "for i in range(2000): print('during the outage', i)\n"
    )
    with server_or_skip() as server:
        store = PostgresStore(server.url())
        runner = runner_at(tmp_path / "a", store, "a")
        task_id = python_task(store, code, tmp_path)
        task = start(runner, task_id, "a")
        driver = threading.Thread(target=run, args=(runner, task, "a"))
        driver.start()
        down = False
        try:
            wait_for(lambda: b"before the outage" in store.read_log(task_id, 0, 1 << 20).data, "the first line stored")
            server.stop("fast")
            down = True
            go.touch()
            path = runner.home.task_log(task_id)
            # the task runs to its end (its output is not held up by the store); the end waits for the store
            wait_for(lambda: b"attempt 1 ended: completed" in path.read_bytes(), "the task's end in its file")
            with pytest.raises(StoreUnavailable):
                store.log_size(task_id)
            assert driver.is_alive(), "the end was recorded while the store was down"
            server.start()
            down = False
            driver.join(60)
            assert not driver.is_alive()
            assert store.get_task(task_id).status == TaskStatus.COMPLETED
            assert store.read_log(task_id, 0, 1 << 20).data == path.read_bytes()
        finally:
            go.touch()
            if down:
                server.start()
            driver.join(60)
            store.close()


def test_a_fenced_attempt_ships_no_more_and_says_so(
    pg: PostgresStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    go = tmp_path / "go"
    code = (
        "import os, time\n"
        "print('before', flush=True)\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.02)\n"
        "print('after the attempt was taken away', flush=True)\n"
    )
    runner = runner_at(tmp_path / "a", pg, "a")
    task_id = python_task(pg, code, tmp_path)
    task = start(runner, task_id, "a")
    driver = threading.Thread(target=run, args=(runner, task, "a"))
    caplog.set_level(logging.WARNING, logger=logship.__name__)
    driver.start()
    try:
        wait_for(lambda: b"before" in pg.read_log(task_id, 0, 1 << 20).data, "the first line stored")
        # another manager declares the host lost: the attempt ends without it
        pg.finish_task(task_id, TaskStatus.FAILED, exit_code=None, reason="host a lost", actor="test")
        go.touch()
        driver.join(60)
        assert not driver.is_alive()
    finally:
        go.touch()
        driver.join(60)
    assert b"after the attempt was taken away" in runner.home.task_log(task_id).read_bytes()
    assert b"after the attempt" not in pg.read_log(task_id, 0, 1 << 20).data
    assert pg.get_task(task_id).status_reason == "host a lost"
    assert "log is no longer shipped to the store" in caplog.text


def test_an_sqlite_store_ships_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "fleet.db")
    runner = runner_at(tmp_path / "a", store, "a")
    task_id = python_task(store, "print('one host')", tmp_path)
    run(runner, start(runner, task_id, "a"), "a")
    assert b"one host" in runner.home.task_log(task_id).read_bytes()
    assert store.log_size(task_id) == 0


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
