"""The two store implementations, by target: a path (SQLite) or a URL (PostgreSQL).

The store's tests take a target from the ``store_target`` fixture
(tests/store/conftest.py), parametrized over both; processes started by a
test open the same target with :func:`open_target`."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg

from fleet.store.interface import Store


def is_pg(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def open_target(target: str) -> Store:
    if is_pg(target):
        from fleet.store.postgres import PostgresStore

        return PostgresStore(target)
    from fleet.store.sqlite import SQLiteStore

    return SQLiteStore(Path(target))


def raw_execute(target: str, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Run one statement (``?`` placeholders) behind the store's back, as another program would."""
    if is_pg(target):
        with psycopg.connect(target, autocommit=True) as pg:
            pg.execute(sql.replace("?", "%s"), params)
        return
    conn = sqlite3.connect(target)
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def raw_count(target: str, table: str) -> int:
    """The rows of ``table`` as stored, read behind the store's back."""
    if is_pg(target):
        with psycopg.connect(target) as pg:
            row = pg.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
            return int(row[0]) if row is not None else 0
    conn = sqlite3.connect(target)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()
