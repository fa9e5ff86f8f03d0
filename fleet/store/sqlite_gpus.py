"""The SQLite store's GPU records: each attempt's GPU UUIDs and drained GPUs.

A drained GPU is a row of ``gpu_drains`` (host, unit), so it survives manager
restarts; every drain and undrain is an event (kind ``gpu``, subject
``HOST:GPU``) in the same transaction.
"""

from __future__ import annotations

import time
from typing import Any

from fleet.core.gpuspec import gpu_label
from fleet.core.models import GpuDrain
from fleet.store.rows import dumps
from fleet.store.sqlite_base import SQLiteBase


class SQLiteGpus(SQLiteBase):
    """Mixed into :class:`fleet.store.sqlite.SQLiteStore`."""

    def set_attempt_gpu_uuids(self, task_id: str, attempt: int, uuids: list[str]) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE tasks SET gpu_uuids = ? WHERE id = ? AND attempt = ?", (dumps(uuids), task_id, attempt)
            )
            conn.execute(
                "UPDATE task_attempts SET gpu_uuids = ? WHERE task_id = ? AND attempt = ?",
                (dumps(uuids), task_id, attempt),
            )

    def drain_gpu(self, host: str, gpu: int, reason: str, source: str, actor: str) -> GpuDrain:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM gpu_drains WHERE host = ? AND gpu = ?", (host, gpu)).fetchone()
            if row is not None and not (row["source"] == "manual" and source == "health"):
                return _drain(dict(row))
            now = time.time()
            conn.execute(
                "INSERT INTO gpu_drains (host, gpu, reason, source, at, actor) VALUES (?,?,?,?,?,?)"
                " ON CONFLICT (host, gpu) DO UPDATE SET reason = excluded.reason, source = excluded.source,"
                " at = excluded.at, actor = excluded.actor",
                (host, gpu, reason, source, now, actor),
            )
            self._event(conn, "gpu", f"{host}:{gpu_label(gpu)}", "in service", "drained", actor, reason)
            return GpuDrain(host, gpu, reason, source, now, actor)

    def undrain_gpu(self, host: str, gpu: int, actor: str) -> GpuDrain | None:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM gpu_drains WHERE host = ? AND gpu = ?", (host, gpu)).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM gpu_drains WHERE host = ? AND gpu = ?", (host, gpu))
            self._event(conn, "gpu", f"{host}:{gpu_label(gpu)}", "drained", "in service", actor, "undrained")
            return _drain(dict(row))

    def drained_gpus(self, host: str | None = None) -> list[GpuDrain]:
        if host is None:
            rows = self.conn.execute("SELECT * FROM gpu_drains ORDER BY host, gpu").fetchall()
        else:
            rows = self.conn.execute("SELECT * FROM gpu_drains WHERE host = ? ORDER BY gpu", (host,)).fetchall()
        return [_drain(dict(r)) for r in rows]


def _drain(row: dict[str, Any]) -> GpuDrain:
    return GpuDrain(row["host"], int(row["gpu"]), row["reason"], row["source"], row["at"], row["actor"])
