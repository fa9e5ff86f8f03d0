"""The SQLite store of metrics samples: writes, one-minute roll-ups, retention, time series.

Raw samples (``res = 0``) are kept ``raw_retention_hours``; before they go,
each complete minute is averaged into one row per series (``res = 60``), kept
``rollup_retention_days``.  The watermark ``rolled_until`` in
``metrics_meta`` says up to which minute roll-ups exist, so a minute is rolled
up exactly once, even across manager restarts.

Each task attempt's figures (samples, CPU sum and maximum, peak RSS, peak
GPU memory) are kept up to date on every write in ``metrics_task_usage``;
they outlive the samples they came from.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
from pathlib import Path
from typing import Any, Protocol

from fleet.core.errors import StoreError
from fleet.metrics.samples import KINDS, Kind, Snapshot, rows
from fleet.store.connections import Connections
from fleet.store.dbapi import DbConn
from fleet.store.interface import ROLLUP_S, AttemptUsage, Maintenance, SampleStore

log = logging.getLogger(__name__)

RAW, ROLLUP = 0, ROLLUP_S
SCHEMA_VERSION = 3  # the migration that made the metrics tables


class Database(Connections):
    """The store's connections (one per thread, WAL, writers queued on the
    ``<db>.lock`` flock so a sampler write never makes a claim wait), plus a
    check that the schema has the metrics tables.  The store creates and
    migrates the schema."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "metrics")

    def _connect(self) -> sqlite3.Connection:
        conn = super()._connect()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            conn.close()
            raise StoreError(f"{self.path} has schema version {version}; metrics need {SCHEMA_VERSION} or later")
        return conn


def _usage_upsert(greatest: str) -> str:
    """Add one sample to an attempt's figures (``greatest``: the dialect's two-argument maximum)."""
    peaks = ", ".join(
        f"{c} = {greatest}(COALESCE(metrics_task_usage.{c}, excluded.{c}), COALESCE(excluded.{c}, metrics_task_usage.{c}))"
        for c in ("cpu_max", "rss_peak_mb", "gpu_mem_peak_mb")
    )
    return (
        "INSERT INTO metrics_task_usage (task, attempt, samples, cpu_sum, cpu_max, rss_peak_mb,"
        " gpu_mem_peak_mb, first_at, last_at) VALUES (?,?,1,?,?,?,?,?,?)"
        " ON CONFLICT (task, attempt) DO UPDATE SET samples = metrics_task_usage.samples + 1,"
        f" cpu_sum = metrics_task_usage.cpu_sum + excluded.cpu_sum, {peaks}, last_at = excluded.last_at"
    )


def _round(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


class SampleDb(Protocol):
    """The connections the samples are read and written through."""

    @property
    def conn(self) -> DbConn: ...

    def tx(self) -> contextlib.AbstractContextManager[DbConn]: ...

    def close(self) -> None: ...


class SQLiteSamples(SampleStore):
    """The sample tables of one fleet database (``fleet.db``).  The SQL is portable
    but for the dialect's maximum of two values and its time bucket (class
    attributes, which :class:`fleet.store.postgres_samples.PostgresSamples` sets)."""

    _GREATEST = "MAX"  # SQLite's scalar max of two values
    _BUCKET = "CAST(at / ? AS INTEGER)"  # the bucket of step ``?`` a time falls in (SQLite truncates)
    db: SampleDb

    def __init__(self, path: Path) -> None:
        self.db = Database(path)

    def close(self) -> None:
        self.db.close()

    # -- writing ----------------------------------------------------------------
    def write(self, snapshot: Snapshot) -> None:
        with self.db.tx() as conn:
            for name, values in rows(snapshot).items():
                if not values:
                    continue
                kind = KINDS[name]
                marks = ",".join("?" * (len(kind.columns) + 2))
                conn.executemany(
                    f"INSERT INTO {kind.table} (res, at, {', '.join(kind.columns)}) VALUES ({marks})",
                    [(RAW, snapshot.at, *row) for row in values],
                )
            conn.executemany(
                _usage_upsert(self._GREATEST),
                [
                    (t.task, t.attempt, t.cpu_percent, t.cpu_percent, t.rss_mb, t.gpu_mem_mb, snapshot.at, snapshot.at)
                    for t in snapshot.tasks
                ],
            )

    # -- roll-ups and retention ---------------------------------------------------
    def _lock_maintenance(self, conn: DbConn) -> None:
        """Called first in :meth:`maintain`'s transaction: SQLite's one writer
        already keeps two maintenances apart."""

    def watermark(self) -> float | None:
        row = self.db.conn.execute("SELECT value FROM metrics_meta WHERE key = 'rolled_until'").fetchone()
        return None if row is None else float(row[0])

    def maintain(self, now: float, raw_retention_s: float, rollup_retention_s: float) -> Maintenance:
        end = math.floor(now / ROLLUP_S) * ROLLUP_S
        rolled = 0
        with self.db.tx() as conn:
            self._lock_maintenance(conn)
            row = conn.execute("SELECT value FROM metrics_meta WHERE key = 'rolled_until'").fetchone()
            start = float(row[0]) if row is not None else None
            if start is None:
                first = conn.execute("SELECT MIN(at) FROM metrics_host WHERE res = 0").fetchone()[0]
                start = math.floor(first / ROLLUP_S) * ROLLUP_S if first is not None else end
            if end > start:
                for kind in KINDS.values():
                    rolled += self._rollup(conn, kind, start, end)
                conn.execute(
                    "INSERT INTO metrics_meta (key, value) VALUES ('rolled_until', ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (float(end),),
                )
            deleted_raw = deleted_rollups = 0
            for kind in KINDS.values():
                cur = conn.execute(f"DELETE FROM {kind.table} WHERE res = ? AND at < ?", (RAW, now - raw_retention_s))
                deleted_raw += cur.rowcount
                cur = conn.execute(
                    f"DELETE FROM {kind.table} WHERE res = ? AND at < ?", (ROLLUP, now - rollup_retention_s)
                )
                deleted_rollups += cur.rowcount
        if rolled or deleted_raw or deleted_rollups:
            log.debug(
                "metrics: rolled up %d rows, dropped %d raw and %d rolled-up", rolled, deleted_raw, deleted_rollups
            )
        return Maintenance(max(end, start), rolled, deleted_raw, deleted_rollups)

    def _rollup(self, conn: Any, kind: Kind, start: float, end: float) -> int:
        keys = ", ".join(kind.keys)
        aggregates = [f"AVG({c})" for c in kind.values] + [f"MAX({c})" for c in kind.maxima]
        cur = conn.execute(
            f"INSERT INTO {kind.table} (res, at, {', '.join(kind.columns)})"
            f" SELECT ?, minute * ?, {keys}, {', '.join(aggregates)} FROM"
            f" (SELECT {self._BUCKET} AS minute, * FROM {kind.table} WHERE res = ? AND at >= ? AND at < ?) AS raw"
            f" GROUP BY minute, {keys}",
            (ROLLUP, ROLLUP_S, ROLLUP_S, RAW, start, end),
        )
        return int(cur.rowcount)

    # -- reading ------------------------------------------------------------------
    def series(
        self,
        kind: Kind,
        since: float,
        until: float,
        step: int,
        ids: list[str] | None = None,
        host: str | None = None,
    ) -> list[dict[str, Any]]:
        """Roll-ups answer where they exist and are fine enough (``step`` of a
        minute or more), raw samples everywhere else."""
        conn = self.db.conn
        rolled = self.watermark() or 0.0
        if step >= ROLLUP_S:
            cut = rolled
        else:
            first = conn.execute(f"SELECT MIN(at) FROM {kind.table} WHERE res = ?", (RAW,)).fetchone()[0]
            cut = float(first) if first is not None else rolled
        keys = ", ".join(kind.keys)
        aggregates = ", ".join([f"AVG({c})" for c in kind.values] + [f"MAX({c})" for c in kind.maxima])
        where = "((res = ? AND at < ?) OR (res = ? AND at >= ?)) AND at >= ? AND at < ?"
        params: list[Any] = [step, ROLLUP, cut, RAW, cut, since, until]
        if ids:
            where += f" AND {kind.keys[-1]} IN ({','.join('?' * len(ids))})"
            params.extend(ids)
        if host is not None:
            where += " AND host = ?"
            params.append(host)
        query = (
            f"SELECT {self._BUCKET} AS bucket, {keys}, {aggregates} FROM {kind.table}"
            f" WHERE {where} GROUP BY bucket, {keys} ORDER BY {keys}, bucket"
        )
        out: dict[tuple[Any, ...], dict[str, Any]] = {}
        value_names = kind.values + kind.maxima
        for row in conn.execute(query, params):
            labels = tuple(row[1 : 1 + len(kind.keys)])
            entry = out.get(labels)
            if entry is None:
                entry = out[labels] = {
                    "id": str(labels[-1]),
                    "labels": dict(zip(kind.keys, labels, strict=True)),
                    "t": [],
                    "values": {name: [] for name in value_names},
                }
            entry["t"].append(row[0] * step)
            for i, name in enumerate(value_names):
                entry["values"][name].append(_round(row[1 + len(kind.keys) + i]))
        return list(out.values())

    def task_usage(self, task_id: str) -> list[AttemptUsage]:
        found = self.db.conn.execute(
            "SELECT * FROM metrics_task_usage WHERE task = ? ORDER BY attempt", (task_id,)
        ).fetchall()
        return [
            AttemptUsage(
                attempt=r["attempt"],
                samples=r["samples"],
                mean_cpu_percent=_round(r["cpu_sum"] / r["samples"]) if r["samples"] else None,
                max_cpu_percent=_round(r["cpu_max"]),
                peak_rss_mb=_round(r["rss_peak_mb"]),
                peak_gpu_mem_mb=_round(r["gpu_mem_peak_mb"]),
                first_at=r["first_at"],
                last_at=r["last_at"],
            )
            for r in found
        ]

    def counts(self) -> dict[str, int]:
        out = {}
        for kind in KINDS.values():
            for res in (RAW, ROLLUP):
                n = self.db.conn.execute(f"SELECT COUNT(*) FROM {kind.table} WHERE res = ?", (res,)).fetchone()[0]
                out[f"{kind.name}.{'raw' if res == RAW else 'rollup'}"] = int(n)
        return out
