"""The schedule driver against a real store, with an injected clock: the
effective state follows the clock, a jump of the clock is picked up by the
next recompute (what the 30-second resync does), and the next APScheduler job
sits at the next boundary."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from fleet.core.models import Worker, WorkerMode, WorkerState
from fleet.manager.hours_driver import ScheduleDriver
from fleet.policy.hours import Schedule, make_schedule
from fleet.store.sqlite import SQLiteStore

TZ = ZoneInfo("Europe/Berlin")


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self, tz: dt.tzinfo | None = None) -> dt.datetime:
        return self.now.astimezone(tz)


def _worker(store: SQLiteStore, schedule: Schedule | None) -> Worker:
    worker = Worker(
        id="box:gpu0",
        host="box",
        mode=WorkerMode.STATIC,
        gpus=[0],
        queues=["q"],
        order_fairness=False,
        state=WorkerState.IDLE,
        state_reason="starting",
        created_at=time.time(),
        schedule=schedule,
    )
    store.create_queue("q", [], "test")
    return store.register_worker(worker, "test")


def test_effective_state_follows_the_clock_and_its_jumps(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "fleet.db")
    _worker(store, make_schedule(["8-20 MON-FRI"], []))
    woken: list[list[str]] = []
    # A Wednesday before hours, in the future so that APScheduler keeps the job.
    clock = Clock(dt.datetime(2027, 11, 24, 7, 30, tzinfo=TZ))
    driver = ScheduleDriver(store, TZ, woken.append, clock=clock)
    driver.start()
    try:
        eff = store.get_worker("box:gpu0").effective
        assert eff is not None and eff.active is False and eff.reason == "outside uptime"
        assert driver.planned() == dt.datetime(2027, 11, 24, 8, 0, tzinfo=TZ)

        clock.now = dt.datetime(2027, 11, 24, 12, 0, tzinfo=TZ)  # the clock jumps forward
        driver.recompute()
        eff = store.get_worker("box:gpu0").effective
        assert eff is not None and eff.active is True and eff.pullable == ("q",)
        assert woken[-1] == ["box:gpu0"]
        assert driver.planned() == dt.datetime(2027, 11, 24, 20, 0, tzinfo=TZ)

        woken.clear()
        driver.recompute()  # nothing changed: nobody is woken
        assert woken == []
    finally:
        driver.stop()


def test_runtime_property_expiry_is_planned_and_purged(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "fleet.db")
    _worker(store, make_schedule([], ["00-24 MON-SUN"]))
    clock = Clock(dt.datetime(2027, 11, 24, 12, 0, tzinfo=TZ))
    driver = ScheduleDriver(store, TZ, lambda ids: None, clock=clock)
    driver.start()
    try:
        expires = clock.now + dt.timedelta(seconds=90)
        store.set_runtime_property("box:gpu0", "force", "on", expires.timestamp(), "test")
        driver.recompute()
        eff = store.get_worker("box:gpu0").effective
        assert eff is not None and eff.active is True and eff.reason.startswith("force:on until")
        assert driver.planned() == expires

        clock.now = expires + dt.timedelta(seconds=1)
        driver.recompute()
        eff = store.get_worker("box:gpu0").effective
        assert eff is not None and eff.active is False
        assert store.runtime_properties(clock.now.timestamp() - 3600) == {}  # purged, not just ignored
    finally:
        driver.stop()
