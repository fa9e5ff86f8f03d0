"""The SQLite store's workers and their runtime properties.

Every worker state change goes through :meth:`SQLiteWorkers.set_worker_state`
(check the move, update, record the event); the typed columns are encoded
by :mod:`fleet.store.rows`.
"""

from __future__ import annotations

import time
from typing import Any

from fleet.core.errors import NotFound
from fleet.core.models import RESTARTABLE, RuntimeProperty, Worker, WorkerState, check_worker_move
from fleet.store.dbapi import DbConn
from fleet.store.rows import to_worker, usable_timestamp, worker_columns, worker_updates
from fleet.store.sqlite_base import SQLiteBase


class SQLiteWorkers(SQLiteBase):
    """Mixed into :class:`fleet.store.sqlite.SQLiteStore`."""

    # -- workers ----------------------------------------------------------------
    def register_worker(self, worker: Worker, actor: str) -> Worker:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM workers WHERE id = ?", (worker.id,)).fetchone()
            values = {
                **worker_columns(worker),
                "pool": None,
                "stop_request": None,
                "pid": None,
                "pid_start": None,
                "pid_boot": None,
            }
            if row is None:
                conn.execute(
                    "INSERT INTO workers (id, state, state_reason, created_at, restarts, "
                    + ", ".join(values)
                    + ") VALUES (?,?,?,?,0,"
                    + ",".join("?" * len(values))
                    + ")",
                    (worker.id, WorkerState.IDLE.value, "starting", time.time(), *values.values()),
                )
                self._event(conn, "worker", worker.id, None, WorkerState.IDLE.value, actor, "created")
            else:
                old = WorkerState(row["state"])
                if old not in RESTARTABLE:
                    check_worker_move(worker.id, old, WorkerState.IDLE)
                columns = ", ".join(f"{k} = ?" for k in values)
                conn.execute(
                    f"UPDATE workers SET state = ?, state_reason = ?, {columns} WHERE id = ?",
                    (WorkerState.IDLE.value, "starting", *values.values(), worker.id),
                )
                self._event(conn, "worker", worker.id, old.value, WorkerState.IDLE.value, actor, "started again")
        return self.get_worker(worker.id)

    def get_worker(self, worker_id: str) -> Worker:
        row = self.conn.execute("SELECT * FROM workers WHERE id = ?", (worker_id,)).fetchone()
        if row is None:
            raise NotFound(f"worker {worker_id} does not exist", field="worker")
        return to_worker(dict(row))

    def list_workers(self, include_dead: bool = False, host: str | None = None) -> list[Worker]:
        where, params = ([] if include_dead else ["state != 'dead'"]), []
        if host is not None:
            where.append("host = ?")
            params.append(host)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return [to_worker(dict(r)) for r in self.conn.execute(f"SELECT * FROM workers{clause} ORDER BY id", params)]

    def set_worker_state(self, worker_id: str, state: WorkerState, reason: str, actor: str, **fields: Any) -> Worker:
        """The one transition function for workers: check, update, record."""
        with self._tx() as conn:
            move_worker(conn, worker_id, state, reason, actor, fields, self._for_update(conn))
        return self.get_worker(worker_id)

    def update_worker(self, worker_id: str, **fields: Any) -> None:
        updates = worker_updates(fields)
        if not updates:
            return
        with self._tx() as conn:
            columns = ", ".join(f"{k} = ?" for k in updates)
            cur = conn.execute(f"UPDATE workers SET {columns} WHERE id = ?", (*updates.values(), worker_id))
            if cur.rowcount == 0:
                raise NotFound(f"worker {worker_id} does not exist", field="worker")

    # -- runtime properties ------------------------------------------------------
    def set_runtime_property(self, worker_id: str, key: str, value: str, expires_at: float | None, actor: str) -> None:
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM workers WHERE id = ?", (worker_id,)).fetchone() is None:
                raise NotFound(f"worker {worker_id} does not exist", field="worker")
            conn.execute(
                "INSERT INTO runtime_properties (worker, key, value, expires_at, set_at) VALUES (?,?,?,?,?)"
                " ON CONFLICT (worker, key) DO UPDATE SET value = excluded.value,"
                " expires_at = excluded.expires_at, set_at = excluded.set_at",
                (worker_id, key, value, expires_at, time.time()),
            )
            until = f" until {expires_at:.0f}" if expires_at is not None else ""
            self._event(conn, "worker", worker_id, None, f"{key}={value}", actor, f"runtime property{until}")

    def delete_runtime_property(self, worker_id: str, key: str, actor: str) -> bool:
        with self._tx() as conn:
            cur = conn.execute("DELETE FROM runtime_properties WHERE worker = ? AND key = ?", (worker_id, key))
            if cur.rowcount:
                self._event(conn, "worker", worker_id, key, "deleted", actor, "runtime property")
            return cur.rowcount > 0

    def runtime_properties(self, now: float | None = None) -> dict[str, dict[str, RuntimeProperty]]:
        now = time.time() if now is None else now
        out: dict[str, dict[str, RuntimeProperty]] = {}
        for r in self.conn.execute(
            "SELECT * FROM runtime_properties WHERE expires_at IS NULL OR expires_at > ?", (now,)
        ):
            if r["expires_at"] is not None and not usable_timestamp(r["expires_at"]):
                self._ignore(r["worker"], f"runtime property {r['key']}", f"expiry {r['expires_at']!r}")
                continue
            out.setdefault(r["worker"], {})[r["key"]] = RuntimeProperty(r["value"], r["expires_at"], r["set_at"])
        return out

    def purge_runtime_properties(self, now: float, actor: str) -> list[str]:
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT worker, key FROM runtime_properties WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
            ).fetchall()
            for worker, key in rows:
                conn.execute("DELETE FROM runtime_properties WHERE worker = ? AND key = ?", (worker, key))
                self._event(conn, "worker", worker, key, "expired", actor, "runtime property")
        return sorted({r[0] for r in rows})


def move_worker(
    conn: DbConn,
    worker_id: str,
    state: WorkerState,
    reason: str,
    actor: str,
    fields: dict[str, Any],
    lock: str = "",
) -> None:
    """A worker's state change inside the caller's transaction (check, update,
    record): :meth:`SQLiteWorkers.set_worker_state`'s, and a claim's (the
    claiming worker becomes busy in the claim's own transaction).  ``lock``:
    the store's clause that locks the row read (:meth:`SQLiteBase._for_update`)."""
    row = conn.execute("SELECT * FROM workers WHERE id = ?" + lock, (worker_id,)).fetchone()
    if row is None:
        raise NotFound(f"worker {worker_id} does not exist", field="worker")
    old = WorkerState(row["state"])
    check_worker_move(worker_id, old, state)
    updates = {**worker_updates(fields), "state": state.value, "state_reason": reason}
    columns = ", ".join(f"{k} = ?" for k in updates)
    conn.execute(f"UPDATE workers SET {columns} WHERE id = ?", (*updates.values(), worker_id))
    if old != state or row["state_reason"] != reason:
        SQLiteBase._event(conn, "worker", worker_id, old.value, state.value, actor, reason)
