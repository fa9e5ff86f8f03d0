"""The store's targets: an SQLite file, and a database on a real PostgreSQL
server (``pg_url`` of tests/conftest.py: one server per test session, a fresh
database per test; see tests/pgserver.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.store.interface import Store
from tests.store.backends import open_target


@pytest.fixture(params=["sqlite", "postgres"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives: an SQLite file, or a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "fleet.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(store_target: str) -> Iterator[Store]:
    """A store of either implementation, with a queue ``q``."""
    s = open_target(store_target)
    s.create_queue("q", [], "test")
    yield s
    s.close()
