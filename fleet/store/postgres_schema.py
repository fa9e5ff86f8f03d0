"""The PostgreSQL schema, versioned in a ``schema_version`` table.

The same tables and columns as the SQLite schema at its latest version
(:mod:`fleet.store.schema`), with PostgreSQL's types: times are
``DOUBLE PRECISION`` epoch seconds, counts ``BIGINT``, JSON columns ``TEXT``
(decoded once, in :mod:`fleet.store.rows`).  The names that lists are
ordered by or looked up by range (task ids: a prefix is a range; queue
names, worker ids, hosts) are ``COLLATE "C"``, so they sort byte by byte as
in SQLite, whatever the database's locale.  ``task_attempts`` has an explicit ``rowid`` (the
dispatch-latency cursor), which SQLite has built in, and ``recorded_at``
(the server's time of the insert: :mod:`fleet.store.postgres_history`).

Migrations only move forward, each in the one transaction that applies them
all.  They are applied by the first manager (or any process opening the
store) under ``pg_advisory_xact_lock``, so managers starting together on
many hosts apply each exactly once; a database whose version is newer than
this code knows is refused and left untouched.  Later issues append
migrations; they never edit old ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg

from fleet.core.errors import StoreError
from fleet.store.schema import SAMPLE_HOSTS

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key of the migrations (any 64-bit number fleet alone uses)
MIGRATION_LOCK = 0x666C656574_01  # "fleet" 1


def _base(conn: psycopg.Connection[Any]) -> None:
    """Queues, tasks, attempts, workers, events, runtime properties, drained GPUs."""
    for statement in (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)",
        'CREATE TABLE queues (id TEXT PRIMARY KEY, name TEXT COLLATE "C" NOT NULL UNIQUE, tags TEXT,'
        " created_at DOUBLE PRECISION)",
        'CREATE TABLE tasks (id TEXT COLLATE "C" PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL,'
        " status_reason TEXT DEFAULT '', queue TEXT, priority BIGINT NOT NULL, seq DOUBLE PRECISION,"
        ' script TEXT NOT NULL, env TEXT, "user" TEXT, requirements TEXT, docker TEXT,'
        " attempt BIGINT NOT NULL DEFAULT 0, retries BIGINT NOT NULL DEFAULT 0, timeout DOUBLE PRECISION,"
        " gpus_needed BIGINT, worker TEXT, host TEXT, gpus TEXT, exit_code BIGINT,"
        " created_at DOUBLE PRECISION NOT NULL, queued_at DOUBLE PRECISION, started_at DOUBLE PRECISION,"
        " finished_at DOUBLE PRECISION, pid BIGINT, pid_start DOUBLE PRECISION, pid_boot TEXT,"
        " abort_requested TEXT, env_cached BIGINT DEFAULT 0, parent TEXT, gpu_uuids TEXT, owner TEXT, runner TEXT)",
        "CREATE INDEX tasks_queue_status ON tasks (queue, status, priority, seq)",
        "CREATE INDEX tasks_status_worker ON tasks (status, worker)",
        "CREATE INDEX tasks_created_at ON tasks (created_at)",
        "CREATE INDEX tasks_status_owner ON tasks (status, owner)",
        "CREATE INDEX tasks_status_runner ON tasks (status, runner)",
        "CREATE INDEX tasks_status_host ON tasks (status, host)",
        'CREATE TABLE task_attempts (rowid BIGSERIAL UNIQUE, task_id TEXT COLLATE "C" NOT NULL,'
        " attempt BIGINT NOT NULL, worker TEXT, host TEXT, gpus TEXT, started_at DOUBLE PRECISION,"
        " finished_at DOUBLE PRECISION, status TEXT, exit_code BIGINT, reason TEXT, gpu_uuids TEXT,"
        " peak_rss_mb DOUBLE PRECISION, cpu_s DOUBLE PRECISION, owner TEXT, runner TEXT,"
        " recorded_at DOUBLE PRECISION DEFAULT extract(epoch FROM clock_timestamp()),"
        " PRIMARY KEY (task_id, attempt))",
        'CREATE TABLE workers (id TEXT COLLATE "C" PRIMARY KEY, host TEXT, mode TEXT, gpus TEXT, queues TEXT,'
        " order_fairness BIGINT DEFAULT 0, state TEXT, state_reason TEXT DEFAULT '', created_at DOUBLE PRECISION,"
        " pid BIGINT, pid_start DOUBLE PRECISION, pid_boot TEXT, last_seen DOUBLE PRECISION, stop_request TEXT,"
        " restarts BIGINT DEFAULT 0, schedule TEXT, effective TEXT, options TEXT, pool TEXT)",
        "CREATE TABLE events (id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION, kind TEXT, subject TEXT, old TEXT,"
        " new TEXT, actor TEXT, reason TEXT)",
        "CREATE INDEX events_kind_subject ON events (kind, subject)",
        "CREATE TABLE runtime_properties (worker TEXT NOT NULL, key TEXT NOT NULL, value TEXT,"
        " expires_at DOUBLE PRECISION, set_at DOUBLE PRECISION, PRIMARY KEY (worker, key))",
        'CREATE TABLE gpu_drains (host TEXT COLLATE "C" NOT NULL, gpu BIGINT NOT NULL, reason TEXT NOT NULL,'
        " source TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL, PRIMARY KEY (host, gpu))",
    ):
        conn.execute(statement)


def _arrays(conn: psycopg.Connection[Any]) -> None:
    """Arrays of tasks made in one call (as SQLite's ``_arrays``)."""
    for statement in (
        "ALTER TABLE tasks ADD COLUMN array_id TEXT",
        "ALTER TABLE tasks ADD COLUMN array_index BIGINT",
        "CREATE INDEX tasks_array_status ON tasks (array_id, status)",
        "CREATE TABLE arrays (id TEXT PRIMARY KEY, max_running BIGINT, created_at DOUBLE PRECISION NOT NULL,"
        ' "user" TEXT NOT NULL, queue TEXT, size BIGINT NOT NULL)',
    ):
        conn.execute(statement)


def _queue_head(conn: psycopg.Connection[Any]) -> None:
    """The index a claim reads the head of a queue from, in the claim's order
    (as SQLite's ``_queue_head``)."""
    conn.execute("DROP INDEX IF EXISTS tasks_queue_status")
    conn.execute("CREATE INDEX tasks_queue_head ON tasks (queue, status, priority DESC, seq)")


def _metrics(conn: psycopg.Connection[Any]) -> None:
    """Metrics samples, per host (as SQLite's ``_v3``: :mod:`fleet.store.sqlite_samples`)."""
    real = "DOUBLE PRECISION"
    tables = {
        "metrics_host": f'host TEXT COLLATE "C" NOT NULL, cpu_percent {real}, load1 {real}, mem_used_mb {real},'
        f" mem_total_mb {real}, mem_percent {real}, disk_free_gb {real}, net_rx_bps {real}, net_tx_bps {real}",
        "metrics_gpu": f'host TEXT COLLATE "C" NOT NULL, gpu BIGINT NOT NULL, util_percent {real},'
        f" mem_used_mb {real}, mem_total_mb {real}, temperature_c {real}, power_w {real}, processes {real}",
        "metrics_worker": f'worker TEXT COLLATE "C" NOT NULL, busy {real}, paused {real}, gpu_util_percent {real},'
        f" gpu_mem_mb {real}, cpu_percent {real}, rss_mb {real}",
        "metrics_task": f'task TEXT COLLATE "C" NOT NULL, attempt BIGINT, cpu_percent {real}, rss_mb {real},'
        f" gpu_mem_mb {real}, processes {real}",
    }
    for table, columns in tables.items():
        conn.execute(f"CREATE TABLE {table} (res INTEGER NOT NULL, at {real} NOT NULL, {columns})")
        conn.execute(f"CREATE INDEX {table}_res_at ON {table} (res, at)")
    conn.execute("CREATE INDEX metrics_task_task ON metrics_task (task, res, at)")
    conn.execute(
        f"CREATE TABLE metrics_task_usage (task TEXT NOT NULL, attempt BIGINT NOT NULL, samples BIGINT NOT NULL,"
        f" cpu_sum {real} NOT NULL, cpu_max {real}, rss_peak_mb {real}, gpu_mem_peak_mb {real},"
        f" first_at {real} NOT NULL, last_at {real} NOT NULL, PRIMARY KEY (task, attempt))"
    )
    conn.execute(f"CREATE TABLE metrics_meta (key TEXT PRIMARY KEY, value {real})")


def _gpu_reservations(conn: psycopg.Connection[Any]) -> None:
    """GPUs a pool holds idle for a waiting task, one holder per task (as SQLite's ``_gpu_reservations``)."""
    conn.execute(
        'CREATE TABLE gpu_reservations (task_id TEXT COLLATE "C" PRIMARY KEY, worker TEXT COLLATE "C" NOT NULL,'
        ' host TEXT COLLATE "C" NOT NULL, need BIGINT NOT NULL, gpus TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)'
    )
    conn.execute("CREATE INDEX gpu_reservations_worker ON gpu_reservations (worker)")
    conn.execute("CREATE INDEX gpu_reservations_host ON gpu_reservations (host)")


def _log_chunks(conn: psycopg.Connection[Any]) -> None:
    """Task logs shipped into the store (as SQLite's ``_log_chunks``), gone with their task."""
    conn.execute(
        'CREATE TABLE log_chunks (task_id TEXT COLLATE "C" NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,'
        " pos BIGINT NOT NULL, attempt BIGINT NOT NULL, data BYTEA NOT NULL, at DOUBLE PRECISION NOT NULL,"
        " PRIMARY KEY (task_id, pos))"
    )


def _hosts(conn: psycopg.Connection[Any]) -> None:
    """Hosts of a fleet and their leases (as SQLite's ``_hosts``); lease times
    are the server's clock."""
    conn.execute(
        'CREATE TABLE hosts (name TEXT COLLATE "C" PRIMARY KEY, gpus TEXT, version TEXT, api_url TEXT, pid BIGINT,'
        " started_at DOUBLE PRECISION NOT NULL, renewed_at DOUBLE PRECISION NOT NULL,"
        " lease_seconds DOUBLE PRECISION NOT NULL, state TEXT NOT NULL, epoch BIGINT NOT NULL DEFAULT 1,"
        " lost_at DOUBLE PRECISION, lost_by TEXT)"
    )
    conn.execute("CREATE INDEX workers_host ON workers (host)")


def _sample_hosts(conn: psycopg.Connection[Any]) -> None:
    """Every sample row carries its host (as SQLite's ``_sample_hosts``, the same statements)."""
    for statement in SAMPLE_HOSTS:
        conn.execute(statement.replace("host TEXT", 'host TEXT COLLATE "C"'))


MIGRATIONS: list[Callable[[psycopg.Connection[Any]], None]] = [
    _base,
    _arrays,
    _metrics,
    _gpu_reservations,
    _log_chunks,
    _hosts,
    _sample_hosts,
    _queue_head,
]
LATEST = len(MIGRATIONS)


def read_version(conn: psycopg.Connection[Any]) -> int:
    """The schema's version (0: no fleet schema yet)."""
    if conn.execute("SELECT to_regclass('schema_version')").fetchone() == (None,):
        return 0
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


def migrate(conn: psycopg.Connection[Any], shown: str, upto: int = LATEST) -> int:
    """Bring the schema to version ``upto`` (all of it by default); the version it had."""
    found = read_version(conn)
    _refuse_newer(found, shown)
    if found >= upto:
        return found  # nothing to write: a read-only role or a standby can still open it
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        version = read_version(conn)  # another manager may have migrated while this one waited
        _refuse_newer(version, shown)
        for number in range(version, upto):
            MIGRATIONS[number](conn)
            log.info("store %s: migrated schema to version %d", shown, number + 1)
        if version < upto:
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (upto,))
    return found


def _refuse_newer(version: int, shown: str) -> None:
    if version > LATEST:
        raise StoreError(
            f"{shown} has schema version {version}, newer than this fleet knows ({LATEST}); "
            "upgrade fleet. The database was left untouched"
        )
