"""The metrics samples on both stores: each host's rows, one-minute roll-ups
done once (also when two hosts' managers maintain at the same moment),
retention, series and an attempt's figures.  The time is given, not read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.core.nvml import GpuSample
from fleet.metrics.samples import KINDS, HostSample, Snapshot, TaskSample
from fleet.store.interface import SampleStore
from fleet.store.postgres_samples import PostgresSamples
from fleet.store.sqlite_samples import SQLiteSamples
from tests.store.backends import is_pg, open_target
from tests.threads import at_once

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 60
DAY, MONTH = 24 * 3600.0, 30 * 86400.0


def open_samples(target: str) -> SampleStore:
    open_target(target).close()  # the store makes the schema
    return PostgresSamples(target) if is_pg(target) else SQLiteSamples(Path(target))


@pytest.fixture
def samples(store_target: str) -> Iterator[SampleStore]:
    s = open_samples(store_target)
    yield s
    s.close()


def _snap(at: float, cpu: float, task_rss: float, host: str = "h") -> Snapshot:
    sample = HostSample(host, cpu, 0.5, 100.0, 1000.0, 10.0, 50.0, 1.0, 2.0)
    gpu = GpuSample(0, None, cpu, 1.0, 2.0, None, None)
    task = TaskSample(host[0] * 32, 2, "w", (1,), cpu, task_rss, None)
    return Snapshot(at, sample, (gpu,), (), (task,))


def test_rollup_retention_series_and_usage(samples: SampleStore) -> None:
    for k in range(18):  # three minutes, every 10 s: cpu = k, on two hosts
        samples.write(_snap(T0 + 10 * k, float(k), 100.0 + k))
        samples.write(_snap(T0 + 10 * k, 2.0 * k, 200.0, host="other"))
    done = samples.maintain(T0 + 185, DAY, MONTH)
    assert done.rolled_until == T0 + 180 and done.rolled_rows == 2 * 3 * 3  # 2 hosts x 3 minutes x 3 kinds
    assert samples.maintain(T0 + 190, DAY, MONTH).rolled_rows == 0  # each minute once
    hosts = {s["id"]: s for s in samples.series(KINDS["host"], T0, T0 + 180, 60)}
    assert hosts["h"]["t"] == [T0, T0 + 60, T0 + 120]
    assert hosts["h"]["values"]["cpu_percent"] == [2.5, 8.5, 14.5]  # averages of 0..5, 6..11, 12..17
    assert hosts["other"]["values"]["cpu_percent"] == [5.0, 17.0, 29.0]
    gpus = samples.series(KINDS["gpu"], T0, T0 + 180, 60)
    assert sorted(s["labels"]["host"] for s in gpus) == ["h", "other"]
    tasks = {s["id"]: s for s in samples.series(KINDS["task"], T0, T0 + 180, 60)}
    task = tasks["h" * 32]
    assert task["values"]["attempt"] == [2, 2, 2] and task["values"]["rss_mb"] == [102.5, 108.5, 114.5]
    raw = {s["id"]: s for s in samples.series(KINDS["host"], T0, T0 + 30, 10)}  # finer than a minute: raw
    assert raw["h"]["values"]["cpu_percent"] == [0.0, 1.0, 2.0]
    (only,) = samples.series(KINDS["host"], T0, T0 + 30, 10, ids=["other"])
    assert only["id"] == "other"

    later = samples.maintain(T0 + DAY + 200, DAY, MONTH)  # past raw retention
    assert later.deleted_raw == 2 * 3 * 18 and samples.counts()["host.raw"] == 0
    coarse = {s["id"]: s for s in samples.series(KINDS["host"], T0, T0 + 180, 10)}  # the roll-ups answer
    assert coarse["h"]["values"]["cpu_percent"] == [2.5, 8.5, 14.5]
    (usage,) = samples.task_usage("h" * 32)  # a task's figures outlive its samples
    assert (usage.samples, usage.peak_rss_mb, usage.mean_cpu_percent, usage.max_cpu_percent) == (18, 117.0, 8.5, 17.0)

    gone = samples.maintain(T0 + MONTH + 200, DAY, MONTH)
    assert gone.deleted_rollups == 2 * 9 and samples.series(KINDS["host"], T0, T0 + 180, 60) == []


def test_two_hosts_maintaining_at_once_roll_each_minute_up_once(pg_url: str) -> None:
    stores = [open_samples(pg_url) for _ in range(4)]
    try:
        for k in range(12):
            stores[0].write(_snap(T0 + 10 * k, float(k), 100.0))
        rolled: list[int] = []
        at_once(lambda n: rolled.append(stores[n].maintain(T0 + 125, DAY, MONTH).rolled_rows), len(stores))
        assert sorted(rolled) == [0, 0, 0, 2 * 3]  # one of them rolled the 2 minutes x 3 kinds
        assert stores[0].counts()["host.rollup"] == 2
    finally:
        for s in stores:
            s.close()
