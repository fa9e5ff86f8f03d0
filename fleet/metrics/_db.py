"""A connection to the fleet database for the metrics package.

The store's connections (:class:`fleet.store.connections.Connections`: one
per thread, WAL, writers queued on the ``<db>.lock`` flock so a sampler write
never makes a claim wait), plus a check that the schema has the metrics
tables.  The store creates and migrates the schema.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fleet.errors import StoreError
from fleet.store.connections import Connections

SCHEMA_VERSION = 3  # the migration that made the metrics tables


class Database(Connections):
    def __init__(self, path: Path) -> None:
        super().__init__(path, "metrics")

    def _connect(self) -> sqlite3.Connection:
        conn = super()._connect()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            conn.close()
            raise StoreError(f"{self.path} has schema version {version}; metrics need {SCHEMA_VERSION} or later")
        return conn
