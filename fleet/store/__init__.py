"""The store: where all shared state lives.  ``open_store`` picks the implementation."""

from __future__ import annotations

from fleet.core.home import Home
from fleet.store.interface import Store


def open_store(home: Home) -> Store:
    """SQLite under ``FLEET_HOME`` (the default, and today the only one)."""
    from fleet.store.sqlite import SQLiteStore

    home.ensure()
    return SQLiteStore(home.db)


__all__ = ["Store", "open_store"]
