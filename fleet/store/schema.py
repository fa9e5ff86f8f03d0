"""The SQLite schema, versioned with ``PRAGMA user_version``.

Each migration moves the schema forward by one version inside one
transaction.  A database whose version is newer than this code knows is
refused, never touched.  Later issues append migrations; they never edit old
ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import sqlite_utils

from fleet.core.gpuspec import format_gpus


def _v1(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.table("queues").create({"id": str, "name": str, "tags": str, "created_at": float}, pk="id")
    db.table("queues").create_index(["name"], unique=True)
    db.table("tasks").create(
        {
            "id": str,
            "name": str,
            "status": str,
            "status_reason": str,
            "queue": str,
            "priority": int,
            "seq": float,
            "script": str,
            "env": str,
            "user": str,
            "requirements": str,
            "docker": str,
            "attempt": int,
            "retries": int,
            "timeout": float,
            "gpus_needed": int,
            "worker": str,
            "host": str,
            "gpus": str,
            "exit_code": int,
            "created_at": float,
            "queued_at": float,
            "started_at": float,
            "finished_at": float,
            "pid": int,
            "pid_start": float,
            "abort_requested": str,
            "env_cached": int,
            "parent": str,
        },
        pk="id",
        not_null={"name", "status", "priority", "script", "created_at", "attempt", "retries"},
        defaults={"status_reason": "", "attempt": 0, "retries": 0, "env_cached": 0},
    )
    db.table("tasks").create_index(["queue", "status", "priority", "seq"])
    db.table("tasks").create_index(["status", "worker"])
    db.table("tasks").create_index(["created_at"])
    db.table("task_attempts").create(
        {
            "task_id": str,
            "attempt": int,
            "worker": str,
            "host": str,
            "gpus": str,
            "started_at": float,
            "finished_at": float,
            "status": str,
            "exit_code": int,
            "reason": str,
        },
        pk=("task_id", "attempt"),
    )
    db.table("workers").create(
        {
            "id": str,
            "host": str,
            "mode": str,
            "gpus": str,
            "queues": str,
            "order_fairness": int,
            "state": str,
            "state_reason": str,
            "created_at": float,
            "pid": int,
            "pid_start": float,
            "last_seen": float,
            "stop_request": str,
            "restarts": int,
        },
        pk="id",
        defaults={"state_reason": "", "restarts": 0, "order_fairness": 0},
    )
    db.table("events").create(
        {
            "id": int,
            "at": float,
            "kind": str,
            "subject": str,
            "old": str,
            "new": str,
            "actor": str,
            "reason": str,
        },
        pk="id",
    )
    db.table("events").create_index(["kind", "subject"])


def _v2(db: sqlite_utils.Database) -> None:
    """Working hours: a worker's schedule, its effective state, runtime properties."""
    db.execute("ALTER TABLE workers ADD COLUMN schedule TEXT")
    db.execute("ALTER TABLE workers ADD COLUMN effective TEXT")
    db.table("runtime_properties").create(
        {"worker": str, "key": str, "value": str, "expires_at": float, "set_at": float},
        pk=("worker", "key"),
    )


def _v3(db: sqlite_utils.Database) -> None:
    """Metrics: samples (``res`` 0 = raw, 60 = one-minute averages), each task
    attempt's usage figures, and the roll-up watermark (:mod:`fleet.metrics.storage`)."""
    # one statement at a time: executescript() would COMMIT the migration's transaction
    for statement in (
        "CREATE TABLE metrics_host (res INTEGER NOT NULL, at REAL NOT NULL, host TEXT NOT NULL, cpu_percent REAL,"
        " load1 REAL, mem_used_mb REAL, mem_total_mb REAL, mem_percent REAL, disk_free_gb REAL, net_rx_bps REAL,"
        " net_tx_bps REAL)",
        "CREATE INDEX metrics_host_res_at ON metrics_host (res, at)",
        "CREATE TABLE metrics_gpu (res INTEGER NOT NULL, at REAL NOT NULL, host TEXT NOT NULL, gpu INTEGER NOT NULL,"
        " util_percent REAL, mem_used_mb REAL, mem_total_mb REAL, temperature_c REAL, power_w REAL, processes REAL)",
        "CREATE INDEX metrics_gpu_res_at ON metrics_gpu (res, at)",
        "CREATE TABLE metrics_worker (res INTEGER NOT NULL, at REAL NOT NULL, worker TEXT NOT NULL, busy REAL,"
        " paused REAL, gpu_util_percent REAL, gpu_mem_mb REAL, cpu_percent REAL, rss_mb REAL)",
        "CREATE INDEX metrics_worker_res_at ON metrics_worker (res, at)",
        "CREATE TABLE metrics_task (res INTEGER NOT NULL, at REAL NOT NULL, task TEXT NOT NULL, attempt INTEGER,"
        " cpu_percent REAL, rss_mb REAL, gpu_mem_mb REAL, processes REAL)",
        "CREATE INDEX metrics_task_res_at ON metrics_task (res, at)",
        "CREATE INDEX metrics_task_task ON metrics_task (task, res, at)",
        "CREATE TABLE metrics_task_usage (task TEXT NOT NULL, attempt INTEGER NOT NULL, samples INTEGER NOT NULL,"
        " cpu_sum REAL NOT NULL, cpu_max REAL, rss_peak_mb REAL, gpu_mem_peak_mb REAL, first_at REAL NOT NULL,"
        " last_at REAL NOT NULL, PRIMARY KEY (task, attempt))",
        "CREATE TABLE metrics_meta (key TEXT PRIMARY KEY, value REAL)",
    ):
        db.execute(statement)


def _v4(db: sqlite_utils.Database) -> None:
    """Dynamic pools and services: a worker's mode options and a pool's last decision."""
    db.execute("ALTER TABLE workers ADD COLUMN options TEXT")
    db.execute("ALTER TABLE workers ADD COLUMN pool TEXT")


def _gpus(db: sqlite_utils.Database) -> None:
    """Real GPUs (issue 17): each attempt's GPU UUIDs, and drained GPUs (kept across restarts)."""
    db.execute("ALTER TABLE tasks ADD COLUMN gpu_uuids TEXT")
    db.execute("ALTER TABLE task_attempts ADD COLUMN gpu_uuids TEXT")
    db.execute(
        "CREATE TABLE gpu_drains (host TEXT NOT NULL, gpu INTEGER NOT NULL, reason TEXT NOT NULL,"
        " source TEXT NOT NULL, at REAL NOT NULL, actor TEXT NOT NULL, PRIMARY KEY (host, gpu))"
    )


def _pid_boot(db: sqlite_utils.Database) -> None:
    """Process identity that survives clock steps (:mod:`fleet.core.procs`): ``pid_start``
    now holds the start in clock ticks since boot and ``pid_boot`` the boot id.
    Rows from before keep their wall-clock ``pid_start`` and a NULL ``pid_boot``,
    which is how they are told apart."""
    db.execute("ALTER TABLE tasks ADD COLUMN pid_boot TEXT")
    db.execute("ALTER TABLE workers ADD COLUMN pid_boot TEXT")


def _exit_usage(db: sqlite_utils.Database) -> None:
    """Each attempt's peak RSS and CPU seconds as the kernel reported them when
    the task's main process was reaped (issue 16: ``show`` of a short task)."""
    db.execute("ALTER TABLE task_attempts ADD COLUMN peak_rss_mb REAL")
    db.execute("ALTER TABLE task_attempts ADD COLUMN cpu_s REAL")


def _owner(db: sqlite_utils.Database) -> None:
    """Ownership as data (issue 13): each attempt's ``owner`` (the registered
    worker it belongs to) and ``runner`` (:class:`fleet.core.models.Runner`),
    written when the attempt starts.  Rows from before are filled in here by
    the rule that read ownership out of worker ids (the only place it is
    left): every task (its latest attempt: ``list --worker``, the running
    tasks) and the attempts still in progress.  Attempts that ended before
    stay without an owner: the report works theirs out from the history
    (:func:`fleet.metrics.report.owners`: the worker live when each started)."""
    for table in ("tasks", "task_attempts"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN owner TEXT")
        db.execute(f"ALTER TABLE {table} ADD COLUMN runner TEXT")
    workers = [dict(r) for r in db.execute("SELECT id, host, mode, gpus FROM workers").fetchall()]
    for table, key in (("tasks", "id"), ("task_attempts", "task_id")):
        pid = "pid" if table == "tasks" else "NULL AS pid"
        attempt = ", attempt" if table == "task_attempts" else ""
        running = " AND status = 'in_progress'" if attempt else ""
        rows = db.execute(
            f"SELECT {key} AS id{attempt}, worker, host, gpus, {pid} FROM {table} WHERE worker IS NOT NULL{running}"
        ).fetchall()
        for row in rows:
            owner, runner = _old_owner(workers, dict(row))
            where = f"{key} = ?" + (" AND attempt = ?" if attempt else "")
            keys = (row[0], row[1]) if attempt else (row[0],)
            db.execute(f"UPDATE {table} SET owner = ?, runner = ? WHERE {where}", (owner, runner, *keys))
    db.execute("CREATE INDEX tasks_status_owner ON tasks (status, owner)")
    db.execute("CREATE INDEX tasks_status_runner ON tasks (status, runner)")
    db.execute("CREATE INDEX tasks_status_host ON tasks (status, host)")


def _arrays(db: sqlite_utils.Database) -> None:
    """Arrays of tasks made in one call (``fleetctl submit --array/--grid``):
    each task names its array and its place in it; ``max_running`` caps how
    many of an array's tasks are in progress at once (checked by the claim)."""
    db.execute("ALTER TABLE tasks ADD COLUMN array_id TEXT")
    db.execute("ALTER TABLE tasks ADD COLUMN array_index INTEGER")
    db.execute("CREATE INDEX tasks_array_status ON tasks (array_id, status)")
    db.execute(
        "CREATE TABLE arrays (id TEXT PRIMARY KEY, max_running INTEGER, created_at FLOAT NOT NULL,"
        " user TEXT NOT NULL, queue TEXT, size INTEGER NOT NULL)"
    )


def _gpu_reservations(db: sqlite_utils.Database) -> None:
    """GPUs a dynamic pool holds idle for a waiting task, one holder per task
    across hosts (:mod:`fleet.store.sqlite_reservations`)."""
    db.execute(
        "CREATE TABLE gpu_reservations (task_id TEXT PRIMARY KEY, worker TEXT NOT NULL, host TEXT NOT NULL,"
        " need INTEGER NOT NULL, gpus TEXT NOT NULL, at FLOAT NOT NULL)"
    )
    db.execute("CREATE INDEX gpu_reservations_worker ON gpu_reservations (worker)")
    db.execute("CREATE INDEX gpu_reservations_host ON gpu_reservations (host)")


def _log_chunks(db: sqlite_utils.Database) -> None:
    """Task logs shipped into the store (:mod:`fleet.store.sqlite_logs`): a
    task's chunks in byte order, gone with their task.  SQLite stores hold
    none (one host reads the file), but keep the one schema."""
    db.execute(
        "CREATE TABLE log_chunks (task_id TEXT NOT NULL, pos INTEGER NOT NULL, attempt INTEGER NOT NULL,"
        " data BLOB NOT NULL, at FLOAT NOT NULL, PRIMARY KEY (task_id, pos))"
    )
    db.execute(
        "CREATE TRIGGER tasks_delete_log_chunks AFTER DELETE ON tasks"
        " BEGIN DELETE FROM log_chunks WHERE task_id = OLD.id; END"
    )


def _hosts(db: sqlite_utils.Database) -> None:
    """Hosts of a fleet and their leases (issue 14): each manager registers its
    host and renews its lease; a host whose lease expired is declared ``lost``
    by another host's manager (:mod:`fleet.store.sqlite_hosts`).  ``epoch``
    counts a host's registrations."""
    db.execute(
        "CREATE TABLE hosts (name TEXT PRIMARY KEY, gpus TEXT, version TEXT, api_url TEXT, pid INTEGER,"
        " started_at REAL NOT NULL, renewed_at REAL NOT NULL, lease_seconds REAL NOT NULL, state TEXT NOT NULL,"
        " epoch INTEGER NOT NULL DEFAULT 1, lost_at REAL, lost_by TEXT)"
    )
    db.execute("CREATE INDEX workers_host ON workers (host)")


def _sample_hosts(db: sqlite_utils.Database) -> None:
    """Many hosts (issue 14): every sample row carries the host it was taken on
    (``metrics_host`` and ``metrics_gpu`` had it; ``metrics_worker`` and
    ``metrics_task`` get it), so one host's series can be read out of a store
    that many hosts share.  Rows from before get their worker's host, and
    their attempt's."""
    for statement in SAMPLE_HOSTS:
        db.execute(statement)


SAMPLE_HOSTS = (  # portable SQL: PostgreSQL's migration runs the same statements
    "ALTER TABLE metrics_worker ADD COLUMN host TEXT",
    "ALTER TABLE metrics_task ADD COLUMN host TEXT",
    "UPDATE metrics_worker SET host = (SELECT w.host FROM workers w WHERE w.id = metrics_worker.worker)",
    "UPDATE metrics_task SET host = (SELECT a.host FROM task_attempts a"
    " WHERE a.task_id = metrics_task.task AND a.attempt = metrics_task.attempt)",
)


def _queue_head(db: sqlite_utils.Database) -> None:
    """The index a claim reads the head of a queue from, in the claim's own
    order (``priority DESC, seq ASC``): the old one (ascending in both) made
    every claim sort all the queued tasks of its queue, so a claim cost
    grew with the queue (1,000 waiting tasks: three times the cost of the
    rest of a claim and an end together)."""
    db.execute("DROP INDEX IF EXISTS idx_tasks_queue_status_priority_seq")
    db.execute("CREATE INDEX tasks_queue_head ON tasks (queue, status, priority DESC, seq)")


def _old_owner(workers: list[dict[str, object]], task: dict[str, object]) -> tuple[str, str]:
    """(owner, runner) of a row written before ``_owner``, by the old rule: a
    static worker runs a task under its own id; a pool's task runs as
    ``<host>:gpu<list>`` with GPUs inside the pool's set, a service as
    ``<host>:service:<task id>``; a task no registered worker owns is
    ``fleetctl execute``'s (``<host>:execute``, or it has a pid) or else a
    remote executor's."""
    run_as, host = str(task["worker"]), task["host"]
    gpus = _int_list(task["gpus"])
    for w in workers:
        if w["id"] == run_as:
            return run_as, {"dynamic": "pool", "services": "service"}.get(str(w["mode"]), "static")
    for w in workers:
        if w["host"] != host:
            continue
        if w["mode"] == "services" and run_as == f"{host}:service:{task['id']}":
            return str(w["id"]), "service"
        pool = set(_int_list(w["gpus"]))
        if w["mode"] == "dynamic" and gpus and set(gpus) <= pool and run_as == f"{host}:gpu{format_gpus(gpus)}":
            return str(w["id"]), "pool"
    if run_as.endswith(":execute") or task["pid"] is not None:
        return run_as, "execute"
    return run_as, "remote"


def _int_list(text: object) -> list[int]:
    """A JSON list of GPU units as stored; anything else (null, damage) is none."""
    try:
        value = json.loads(str(text)) if text else None
        return [int(g) for g in value] if isinstance(value, list) else []
    except (ValueError, TypeError):
        return []


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _v1,
    _v2,
    _v3,
    _v4,
    _gpus,
    _pid_boot,
    _exit_usage,
    _owner,
    _arrays,
    _gpu_reservations,
    _log_chunks,
    _hosts,
    _sample_hosts,
    _queue_head,
]
LATEST = len(MIGRATIONS)
