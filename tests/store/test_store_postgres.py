"""What only the PostgreSQL store has: its schema versions and their lock,
claims from threads on one queue (and an array's cap among them), locks
across hosts, and the ``fleet.store.url`` setting (its faults:
test_store_postgres_faults.py).  The rest of the store's behaviour is
tested on both implementations (test_store.py and friends)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from fleet.core.config import load_config, parse_config_string
from fleet.core.errors import ConfigError, StoreError
from fleet.core.home import Home
from fleet.core.models import ArraySpec, Script, Task, TaskRequirements, TaskSpec, TaskStatus
from fleet.store import (
    SampleStore,
    Store,
    open_samples,
    open_store,
    postgres_connections,
    postgres_history,
    postgres_schema,
)
from fleet.store.postgres import PostgresStore
from tests.store.test_store import make_worker, spec
from tests.threads import at_once

PASSWORD = "s3cr3t-Pa55word"


def _version(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return postgres_schema.read_version(conn)


# -- schema ------------------------------------------------------------------------------


def test_a_new_database_gets_the_latest_schema_and_reopening_writes_nothing(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    PostgresStore(pg_url).close()
    assert _version(pg_url) == postgres_schema.LATEST
    with caplog.at_level(logging.INFO, logger="fleet.store"):
        PostgresStore(pg_url).close()
    assert "migrated" not in caplog.text


def test_an_older_schema_is_upgraded_and_keeps_its_rows(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        postgres_schema.migrate(conn, "test", upto=1)  # before arrays
        conn.execute(
            'INSERT INTO tasks (id, name, status, priority, script, created_at, "user", queue, seq, queued_at)'
            " VALUES (%s, 'old', 'queued', 0, '{\"command\": [\"true\"], \"working_dir\": \".\"}', 1.0, 'ann',"
            " 'q', 1.0, 1.0)",
            ("a" * 32,),
        )
        conn.execute("INSERT INTO queues (id, name, tags, created_at) VALUES ('q1', 'q', '[]', 1.0)")
    assert _version(pg_url) == 1
    store = PostgresStore(pg_url)
    try:
        assert _version(pg_url) == postgres_schema.LATEST
        old = store.get_task("a" * 32)
        assert (old.name, old.user, old.status, old.array_id) == ("old", "ann", TaskStatus.QUEUED, None)
        claimed = store.claim_next_task(store.register_worker(make_worker(), "t"), ["q"], [])
        assert claimed is not None and claimed.id == "a" * 32
        store.create_tasks([(spec(), "q")], ArraySpec(id="arr", max_running=1), "t")  # the new tables work
        assert store.get_array("arr").size == 1
    finally:
        store.close()


def test_a_server_older_than_supported_is_refused_untouched(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres_connections, "MIN_SERVER_VERSION", 990000)  # this server (15) as if too old
    with pytest.raises(StoreError, match=r"the server is PostgreSQL 15\.\d+; fleet needs 99 or newer"):
        PostgresStore(pg_url)
    assert _version(pg_url) == 0


def test_a_newer_schema_is_refused_and_left_untouched(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (%s)", (postgres_schema.LATEST + 1,))
    with pytest.raises(StoreError, match=f"schema version {postgres_schema.LATEST + 1}, newer than this fleet"):
        PostgresStore(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    assert tables == ["schema_version"]
    assert _version(pg_url) == postgres_schema.LATEST + 1


def test_managers_starting_together_migrate_once(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The first takes the advisory lock and migrates; the others wait, then find it done."""

    def start(_: int) -> None:
        PostgresStore(pg_url, pool_size=1).close()

    with caplog.at_level(logging.INFO, logger="fleet.store"):
        at_once(start, 6)
    assert _version(pg_url) == postgres_schema.LATEST
    migrated = [r for r in caplog.records if "migrated schema to version 1" in r.getMessage()]
    assert len(migrated) == 1


# -- claims from threads, each with its own connections --------------------------------------


def _claim_side_by_side(url: str, threads: int, finish: bool) -> list[list[str]]:
    """``threads`` claimers, each with its own store (own connections), start
    together and claim from queue ``q`` until it has nothing for them; each
    finishes its tasks when ``finish``.  What each claimed, in order."""
    stores = [PostgresStore(url, pool_size=2) for _ in range(threads)]
    go = threading.Barrier(threads)

    def claim(i: int, store: PostgresStore) -> list[str]:
        worker = store.register_worker(make_worker(f"w{i}"), "t")
        go.wait(30)
        got = []
        while (task := store.claim_next_task(worker, ["q"], [])) is not None:
            got.append(task.id)
            if finish:
                store.finish_task(task.id, TaskStatus.COMPLETED, exit_code=0, reason="", actor="t")
        return got

    try:
        with ThreadPoolExecutor(threads) as pool:
            return [f.result(90) for f in [pool.submit(claim, i, s) for i, s in enumerate(stores)]]
    finally:
        for s in stores:
            s.close()


@pytest.mark.timeout(120)
def test_threads_claiming_one_queue_get_each_task_once(pg_url: str) -> None:
    seed = PostgresStore(pg_url)
    try:
        seed.create_queue("q", [], "t")
        ids = set(seed.create_tasks([(spec(), "q") for _ in range(300)], None, "t"))
        results = _claim_side_by_side(pg_url, 6, finish=True)
        everything = [tid for got in results for tid in got]
        assert len(everything) == len(set(everything)) == len(ids)
        assert set(everything) == ids
        assert sum(1 for got in results if got) > 1
        starts = [e.subject for e in seed.events("task", limit=5000) if e.new == "in_progress"]
        assert sorted(starts) == sorted(ids)
    finally:
        seed.close()


@pytest.mark.timeout(120)
def test_an_arrays_cap_holds_among_claimers_running_side_by_side(pg_url: str) -> None:
    seed = PostgresStore(pg_url)
    try:
        seed.create_queue("q", [], "t")
        capped = seed.create_tasks([(spec(), "q") for _ in range(20)], ArraySpec(id="cap", max_running=2), "t")
        free = seed.create_tasks([(spec(), "q") for _ in range(6)], None, "t")
        # never finished: the cap must hold with all of them running
        claimed = [tid for got in _claim_side_by_side(pg_url, 8, finish=False) for tid in got]
        assert len(claimed) == len(set(claimed))
        assert len([t for t in claimed if t in set(capped)]) == 2  # the cap, with 8 claimers at once
        assert set(free) <= set(claimed)  # the tasks behind the capped ones were still taken
        assert seed.get_array("cap").counts == {"in_progress": 2, "queued": 18}
    finally:
        seed.close()


def test_an_array_abort_waits_for_a_claim_in_flight_and_flags_what_it_took(pg_url: str) -> None:
    """A claim on another host holds a task of the array while the abort runs:
    the abort waits for it, then flags the task it took instead of failing."""
    store = PostgresStore(pg_url)
    try:
        store.create_queue("q", [], "t")
        first, second = store.create_tasks([(spec(), "q"), (spec(), "q")], ArraySpec(id="arr"), "t")
        with psycopg.connect(pg_url) as claim:  # a transaction in flight
            claim.execute("UPDATE tasks SET status = 'in_progress' WHERE id = %s", (first,))
            aborted: list[list[Task]] = []
            waiter = threading.Thread(target=lambda: aborted.append(store.abort_array("arr", "t", "enough")))
            waiter.start()
            deadline = time.monotonic() + 30
            while claim.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone() == (0,):
                assert time.monotonic() < deadline, "the abort never waited for the claim"
                time.sleep(0.05)
            claim.commit()
            waiter.join(30)
        (changed,) = aborted
        by_id = {t.id: t for t in changed}
        assert by_id[first].status == TaskStatus.IN_PROGRESS and by_id[first].abort_requested == "enough"
        assert by_id[second].status == TaskStatus.STOPPED
    finally:
        store.close()


def test_submits_and_requeues_from_many_hosts_at_once_get_distinct_queue_positions(pg_url: str) -> None:
    """A position is MAX(seq) + 1, read and written under the queue-order lock:
    submits on some hosts and retries requeued on others never share one (so
    first in is first out across hosts)."""
    stores = [PostgresStore(pg_url, pool_size=1) for _ in range(4)]
    try:
        stores[0].create_queue("q", [], "t")
        worker = stores[0].register_worker(make_worker(), "t")
        running = []
        for _ in range(60):
            stores[0].create_task(spec(), "q", "t")
            claimed = stores[0].claim_next_task(worker, ["q"], [])
            assert claimed is not None
            running.append(claimed.id)

        def host(n: int) -> None:
            for i in range(30):
                if n % 2:
                    stores[n].create_task(spec(), "q", f"host{n}")
                else:
                    task_id = running[(n // 2) * 30 + i]
                    stores[n].finish_task(task_id, TaskStatus.FAILED, exit_code=1, reason="", actor="t", requeue="tail")

        at_once(host, len(stores))
        with psycopg.connect(pg_url) as conn:
            counted = conn.execute("SELECT count(*), count(DISTINCT seq) FROM tasks WHERE status = 'queued'").fetchone()
        assert counted == (120, 120)
    finally:
        for s in stores:
            s.close()


def test_dispatch_latencies_wait_until_no_earlier_claim_can_still_commit(pg_url: str) -> None:
    """The cursor never passes an attempt recorded less than SETTLE_S ago (a claim
    on another host may still commit one before it), and reads each once."""
    store = PostgresStore(pg_url)
    try:
        store.create_queue("q", [], "t")
        worker = store.register_worker(make_worker(), "t")
        for _ in range(4):
            store.create_task(spec(), "q", "t")
            assert store.claim_next_task(worker, ["q"], []) is not None
        assert store.dispatch_latencies(0) == (0, [])  # all four too fresh
        with psycopg.connect(pg_url, autocommit=True) as conn:
            rowids = [r[0] for r in conn.execute("SELECT rowid FROM task_attempts ORDER BY rowid")]
            settled = "UPDATE task_attempts SET recorded_at = recorded_at - %s WHERE rowid = ANY(%s)"
            conn.execute(settled, (postgres_history.SETTLE_S + 1, [rowids[0], rowids[1], rowids[3]]))
        cursor, latencies = store.dispatch_latencies(0)
        assert cursor == rowids[1] and len(latencies) == 2  # not past the third, still fresh
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(settled, (postgres_history.SETTLE_S + 1, [rowids[2]]))
        assert store.dispatch_latencies(cursor)[0] == rowids[3]
        assert len(store.dispatch_latencies(cursor)[1]) == 2
        assert store.dispatch_latencies(rowids[3]) == (rowids[3], [])
    finally:
        store.close()


# -- the setting -------------------------------------------------------------------------------


def test_the_store_url_setting_and_its_environment_variable(tmp_path: Path) -> None:
    assert parse_config_string("").fleet.store.url == ""
    url = "postgresql://fleet@db.lab:5432/fleet"
    assert parse_config_string(f'fleet {{ store {{ url: "{url}" }} }}').fleet.store.url == url
    assert load_config(None, env={"FLEET_STORE_URL": url, "HOME": str(tmp_path)}).fleet.store.url == url
    with pytest.raises(ConfigError, match=r"fleet\.store\.url") as caught:
        parse_config_string(f'fleet {{ store {{ url: "mysql://fleet:{PASSWORD}@db/fleet" }} }}')
    assert PASSWORD not in str(caught.value) and "mysql://fleet:********@db/fleet" in str(caught.value)
    with pytest.raises(ConfigError, match="port is not a number"):
        parse_config_string('fleet { store { url: "postgresql://db:port/fleet" } }')
    with pytest.raises(ConfigError, match="FLEET_STORE_URL") as caught:
        load_config(None, env={"FLEET_STORE_URL": f"http://u:{PASSWORD}@x/", "HOME": str(tmp_path)})
    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in repr(parse_config_string(f'fleet {{ store {{ url: "postgresql://u:{PASSWORD}@db/f" }} }}'))


def test_open_store_picks_the_implementation(tmp_path: Path, pg_url: str) -> None:
    home = Home(tmp_path / "home")
    opened: list[Store | SampleStore] = [open_store(home), open_store(home, pg_url)]
    opened += [open_samples(home), open_samples(home, pg_url)]
    try:
        assert [type(s).__name__ for s in opened] == [
            "SQLiteStore",
            "PostgresStore",
            "SQLiteSamples",
            "PostgresSamples",
        ]
        assert (tmp_path / "home" / "fleet.db").exists()
        local, shared = opened[0], opened[1]
        assert isinstance(local, Store) and local.location == str(tmp_path / "home" / "fleet.db")
        assert isinstance(shared, Store) and shared.location == pg_url  # no password in it to mask
    finally:
        for s in opened:
            s.close()


def test_a_postgres_url_without_the_extra_installed_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "psycopg" or m.startswith(("psycopg.", "fleet.store.postgres"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed: importing it fails
    with pytest.raises(StoreError, match=r"psycopg is not installed: pip install 'fleet\[postgres\]'"):
        open_store(Home(tmp_path), "postgresql://fleet@db/fleet")


def test_a_summary_list_leaves_the_large_fields_out(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    try:
        store.create_queue("q", [], "t")
        big = TaskSpec(
            script=Script(command=["true"], working_dir=".", diff="x" * 1000),
            env={"A": "1", "SECRET": "2"},
            requirements=TaskRequirements(file="numpy\n" * 100),
        )
        store.create_task(big, "q", "t")
        (task,), _ = store.list_tasks(summary=True)
        assert task.script.diff == "…" and task.env == {"A": "", "SECRET": ""}
        assert task.requirements.file == "…"
    finally:
        store.close()
