"""Where the sampler's samples are kept: a :class:`fleet.store.interface.SampleStore`
(writes, one-minute roll-ups, retention, time series, each attempt's figures).
SQLite's is :class:`fleet.store.sqlite_samples.SQLiteSamples`, on the fleet
database; ``MetricsStorage(path)`` opens it.
"""

from __future__ import annotations

from fleet.store.interface import ROLLUP_S, Maintenance, SampleStore
from fleet.store.sqlite_samples import RAW, ROLLUP
from fleet.store.sqlite_samples import SQLiteSamples as MetricsStorage

__all__ = ["RAW", "ROLLUP", "ROLLUP_S", "Maintenance", "MetricsStorage", "SampleStore"]
