"""The store: where all shared state lives.  ``open_store`` picks the implementation."""

from __future__ import annotations

from fleet.core.home import Home
from fleet.store.interface import SampleStore, Store


def open_store(home: Home, url: str = "") -> Store:
    """SQLite under ``FLEET_HOME`` (the default: one host, nothing to install), or
    the PostgreSQL database at ``url`` (``fleet.store.url`` / ``FLEET_STORE_URL``),
    shared by the managers and workers of many hosts."""
    if url:
        from fleet.store.postgres import PostgresStore

        return PostgresStore(url)
    from fleet.store.sqlite import SQLiteStore

    home.ensure()
    return SQLiteStore(home.db)


def open_samples(home: Home, url: str = "") -> SampleStore:
    """The metrics samples of the same store as :func:`open_store` (``url`` alike)."""
    if url:
        from fleet.store.postgres_samples import PostgresSamples

        return PostgresSamples(url)
    from fleet.store.sqlite_samples import SQLiteSamples

    return SQLiteSamples(home.db)


__all__ = ["SampleStore", "Store", "open_samples", "open_store"]
