"""Hosts of a fleet and their leases (portable SQL, both stores).

Each manager registers its host (:meth:`SQLiteHosts.register_host`) and
renews its lease every third of ``fleet.host_lease_seconds``.  Every manager
looks for hosts whose lease expired (:meth:`SQLiteHosts.declare_lost_hosts`)
and one of them declares each such host ``lost``, in one transaction with
all that follows from it: its workers shown ``lost``, its running attempts
ended ``failed`` with ``host <name> lost`` through the task transition
function (queued again when retries are left, as any failure), its pools'
GPUs freed.  Lease times are the store's clock (:meth:`_clock`: on
PostgreSQL the server's, so the hosts' clocks need not agree); one leader
at a time (:meth:`_leader`: on PostgreSQL ``pg_try_advisory_xact_lock``; in
SQLite the one writer already is).  A host that comes back is told by
:meth:`SQLiteHosts.renew_host` (:class:`~fleet.errors.HostLost`) and its
attempts' writes are fenced (:meth:`SQLiteBase._check_owner`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fleet.core.errors import HostLost, NotFound
from fleet.core.hosts import HostInfo, HostRow, HostState, LostHost, host_lost_reason
from fleet.core.models import TaskStatus, WorkerState
from fleet.store.dbapi import DbConn
from fleet.store.rows import dumps, loads
from fleet.store.sqlite_base import SQLiteBase
from fleet.store.sqlite_workers import move_worker


class SQLiteHosts(SQLiteBase):
    """Mixed into :class:`fleet.store.sqlite.SQLiteStore` and :class:`fleet.store.postgres.PostgresStore`."""

    def register_host(self, name: str, info: HostInfo, *, lease_seconds: float, now: float | None = None) -> HostRow:
        with self._tx() as conn:
            at = self._clock(conn, now)
            row = conn.execute("SELECT * FROM hosts WHERE name = ?" + self._for_update(conn), (name,)).fetchone()
            values = (dumps(info.gpus), info.version, info.api_url, info.pid, at, at, lease_seconds)
            if row is None:
                conn.execute(
                    "INSERT INTO hosts (gpus, version, api_url, pid, started_at, renewed_at, lease_seconds,"
                    " state, epoch, name) VALUES (?,?,?,?,?,?,?,?,1,?)",
                    (*values, HostState.UP.value, name),
                )
                self._event(conn, "host", name, None, HostState.UP.value, f"host:{name}", "registered")
            else:
                conn.execute(
                    "UPDATE hosts SET gpus = ?, version = ?, api_url = ?, pid = ?, started_at = ?, renewed_at = ?,"
                    " lease_seconds = ?, state = ?, epoch = epoch + 1, lost_at = NULL, lost_by = NULL WHERE name = ?",
                    (*values, HostState.UP.value, name),
                )
                why = f"registered again (epoch {row['epoch'] + 1})"
                self._event(conn, "host", name, row["state"], HostState.UP.value, f"host:{name}", why)
            return self._host(conn, name, at)

    def renew_host(self, name: str, now: float | None = None) -> HostRow:
        with self._tx() as conn:
            at = self._clock(conn, now)
            cur = conn.execute(
                "UPDATE hosts SET renewed_at = ? WHERE name = ? AND state = ?", (at, name, HostState.UP.value)
            )
            if cur.rowcount == 1:
                return self._host(conn, name, at)
            row = conn.execute("SELECT * FROM hosts WHERE name = ?", (name,)).fetchone()
        if row is not None and row["state"] == HostState.LOST.value:
            when = datetime.fromtimestamp(row["lost_at"]).astimezone().isoformat(timespec="seconds")
            raise HostLost(
                f"host {name} was declared lost by {row['lost_by']} at {when} (its lease of"
                f" {row['lease_seconds']:g}s expired): its running attempts were ended there",
                field="host",
            )
        raise NotFound(f"host {name} is not registered", field="host")

    def leave_host(self, name: str, actor: str, now: float | None = None) -> None:
        with self._tx() as conn:
            at = self._clock(conn, now)
            cur = conn.execute(
                "UPDATE hosts SET state = ?, renewed_at = ? WHERE name = ? AND state = ?",
                (HostState.LEFT.value, at, name, HostState.UP.value),
            )
            if cur.rowcount == 1:
                self._event(conn, "host", name, HostState.UP.value, HostState.LEFT.value, actor, "stopped")

    def list_hosts(self, now: float | None = None) -> list[HostRow]:
        at = self._clock(self.conn, now)
        return [_host_row(dict(r), at) for r in self.conn.execute("SELECT * FROM hosts ORDER BY name")]

    def declare_lost_hosts(self, by: str, now: float | None = None) -> list[LostHost]:
        with self._tx() as conn:
            if not self._leader(conn):
                return []  # another manager is looking right now
            at = self._clock(conn, now)
            rows = conn.execute(
                "SELECT * FROM hosts WHERE state = ? AND name <> ? AND renewed_at + lease_seconds < ? ORDER BY name"
                + self._for_update(conn),
                (HostState.UP.value, by, at),
            ).fetchall()
            return [self._declare_lost(conn, dict(row), by, at) for row in rows]

    def _declare_lost(self, conn: DbConn, host: dict[str, Any], by: str, at: float) -> LostHost:
        name, actor = host["name"], f"host:{by}"
        reason = host_lost_reason(name)
        conn.execute(
            "UPDATE hosts SET state = ?, lost_at = ?, lost_by = ? WHERE name = ?",
            (HostState.LOST.value, at, by, name),
        )
        late = at - host["renewed_at"] - host["lease_seconds"]
        why = f"lease of {host['lease_seconds']:g}s not renewed (expired {late:.1f}s ago)"
        self._event(conn, "host", name, HostState.UP.value, HostState.LOST.value, actor, why)
        failed, requeued, queues = [], [], set()
        lock = self._for_update(conn)
        running = conn.execute(
            "SELECT * FROM tasks WHERE status = ? AND host = ? ORDER BY started_at, id" + lock,
            (TaskStatus.IN_PROGRESS.value, name),
        ).fetchall()
        for found in running:
            row = dict(found)
            again = "tail" if row["attempt"] <= row["retries"] else None
            self._end_attempt(conn, row, TaskStatus.FAILED, None, reason, actor, requeue=again)
            failed.append(row["id"])
            if row["status"] == TaskStatus.QUEUED.value:
                requeued.append(row["id"])
                queues.add(row["queue"])
        workers = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM workers WHERE host = ? AND state NOT IN (?, ?) ORDER BY id",
                (name, WorkerState.DEAD.value, WorkerState.LOST.value),
            ).fetchall()
        ]
        for wid in workers:  # pool=None: a pool's GPUs are held by no one now
            move_worker(conn, wid, WorkerState.LOST, reason, actor, {"pool": None}, lock)
        return LostHost(name, workers, failed, requeued, sorted(queues))

    def _host(self, conn: DbConn, name: str, at: float) -> HostRow:
        row = conn.execute("SELECT * FROM hosts WHERE name = ?", (name,)).fetchone()
        if row is None:  # pragma: no cover - read in the transaction that wrote it
            raise NotFound(f"host {name} is not registered", field="host")
        return _host_row(dict(row), at)


def _host_row(row: dict[str, Any], at: float) -> HostRow:
    return HostRow(
        name=row["name"],
        gpus=[int(g) for g in loads(row["gpus"], [])],
        version=row["version"] or "",
        api_url=row["api_url"] or "",
        pid=row["pid"],
        started_at=row["started_at"],
        renewed_at=row["renewed_at"],
        lease_seconds=row["lease_seconds"],
        state=HostState(row["state"]),
        epoch=int(row["epoch"]),
        lost_at=row["lost_at"],
        lost_by=row["lost_by"],
        lease_age=max(0.0, at - row["renewed_at"]),
    )
