"""The store: where all shared state lives.  ``open_store`` picks the implementation."""

from __future__ import annotations

from types import ModuleType

from fleet.core.errors import StoreError
from fleet.core.home import Home
from fleet.store.interface import SampleStore, Store


def _postgres(module: str) -> ModuleType:
    """A PostgreSQL module of the store, or a StoreError saying what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise StoreError(
            f"fleet.store.url names a PostgreSQL store, but {exc.name or 'psycopg'} is not installed:"
            " pip install 'fleet[postgres]'"
        ) from None


def open_store(home: Home, url: str = "") -> Store:
    """SQLite under ``FLEET_HOME`` (the default: one host, nothing to install), or
    the PostgreSQL database at ``url`` (``fleet.store.url`` / ``FLEET_STORE_URL``),
    shared by the managers and workers of many hosts."""
    if url:
        store: Store = _postgres("fleet.store.postgres").PostgresStore(url)
        return store
    from fleet.store.sqlite import SQLiteStore

    home.ensure()
    return SQLiteStore(home.db)


def open_samples(home: Home, url: str = "") -> SampleStore:
    """The metrics samples of the same store as :func:`open_store` (``url`` alike)."""
    if url:
        samples: SampleStore = _postgres("fleet.store.postgres_samples").PostgresSamples(url)
        return samples
    from fleet.store.sqlite_samples import SQLiteSamples

    return SQLiteSamples(home.db)


__all__ = ["SampleStore", "Store", "open_samples", "open_store"]
