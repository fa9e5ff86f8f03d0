"""Applies working hours in the manager, driven by APScheduler (3.x).

Each worker's effective state (may it pull, from which queues, why) is
computed from its schedule, its runtime properties and the queue tags by the
pure :func:`fleet.policy.effective.effective_state`, stored on the worker
row, and the workers whose state changed are woken at once.  One APScheduler
date job is kept at the next instant anything can change by the clock alone
(a schedule boundary or a property's expiry), so a change takes effect when it
is due, not at the next poll.  A changed tag or property recomputes at once;
a 30-second interval job recomputes too, which covers clock jumps.

Times are in the host's local time zone, or ``fleet.timezone``.

While the store is unavailable (a full disk: :mod:`fleet.store.faults`) a
recompute that fails is tried again with back-off (one ``retry`` job), and the
workers go on with the effective states they last read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping
from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger

from fleet.core.errors import ConfigError, FleetError, StoreUnavailable
from fleet.core.models import RuntimeProperty
from fleet.policy.effective import Effective, Force, effective_state
from fleet.store import Store
from fleet.store.faults import Backoff

log = logging.getLogger(__name__)

RESYNC_S = 30
ACTOR = "schedule"


def zone(name: str) -> dt.tzinfo:
    """``fleet.timezone`` when set, else the host's zone (DST-aware, via tzlocal)."""
    if name:
        try:
            return ZoneInfo(name)
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"config fleet.timezone: unknown time zone {name!r}", field="fleet.timezone") from exc
    from tzlocal import get_localzone

    return get_localzone()


def _force(props: Mapping[str, RuntimeProperty], tz: dt.tzinfo) -> Force | None:
    prop = props.get("force")
    if prop is None or prop.value not in ("on", "off"):
        return None
    expires = prop.expires_at
    return Force(
        "on" if prop.value == "on" else "off", dt.datetime.fromtimestamp(expires, tz) if expires is not None else None
    )


def _stored(eff: Effective) -> Effective:
    """``eff`` as the row keeps it: ``next_change`` to the second."""
    when = eff.next_change
    return eff if when is None else dataclasses.replace(eff, next_change=when.replace(microsecond=0))


class ScheduleDriver:
    def __init__(
        self,
        store: Store,
        tz: dt.tzinfo,
        wake: Callable[[list[str]], None],
        clock: Callable[[dt.tzinfo], dt.datetime] = dt.datetime.now,
        *,
        host: str | None = None,
    ) -> None:
        self.store = store
        self.host = host  # the workers it computes: this host's (None: all, one host)
        self.tz = tz
        self.wake = wake
        self.clock = clock  # injectable for tests; the manager uses the real clock
        self._lock = threading.Lock()
        self._scheduler = BackgroundScheduler(timezone=tz)
        self._retry = Backoff()

    def start(self) -> None:
        self._scheduler.start()
        self._scheduler.add_job(self.recompute, "interval", seconds=RESYNC_S, id="resync")
        self.recompute()

    def stop(self) -> None:
        self._scheduler.shutdown(wait=False)

    def recompute(self) -> None:
        """Bring every live worker's effective state up to date; schedule the next run."""
        with self._lock:
            try:
                self._recompute()
            except StoreUnavailable:  # the store logs the outage once
                delay = self._retry.failed()
                when = self.clock(self.tz) + dt.timedelta(seconds=delay)
                self._scheduler.add_job(
                    self.recompute, DateTrigger(run_date=when, timezone=self.tz), id="retry", replace_existing=True
                )
            except FleetError as exc:
                log.error("schedule: %s", exc)
            else:
                self._retry.ok()

    def _recompute(self) -> None:
        now = self.clock(self.tz)
        self.store.purge_runtime_properties(now.timestamp(), ACTOR)
        props = self.store.runtime_properties(now.timestamp())
        tags = {q.name: q.tags for q in self.store.list_queues()}
        changed: list[str] = []
        upcoming: list[dt.datetime] = []
        for worker in self.store.list_workers(host=self.host):
            mine = props.get(worker.id, {})
            eff = effective_state(now, worker.queues, worker.schedule, _force(mine, self.tz), tags)
            if _stored(eff) != worker.effective:
                self.store.update_worker(worker.id, effective=_stored(eff))
                changed.append(worker.id)
                log.info("schedule: worker %s %s (%s)", worker.id, "active" if eff.active else "paused", eff.reason)
            if eff.next_change is not None:
                upcoming.append(eff.next_change)
            upcoming += [dt.datetime.fromtimestamp(p.expires_at, self.tz) for p in mine.values() if p.expires_at]
        self._plan(min(upcoming) if upcoming else None)
        if changed:
            self.wake(changed)

    def planned(self) -> dt.datetime | None:
        """When the next recompute is due (None: nothing changes by the clock)."""
        job = self._scheduler.get_job("next")
        return None if job is None else job.trigger.run_date

    def _plan(self, when: dt.datetime | None) -> None:
        if when is None:
            if self._scheduler.get_job("next") is not None:
                self._scheduler.remove_job("next")
            return
        self._scheduler.add_job(
            self.recompute,
            DateTrigger(run_date=when, timezone=self.tz),
            id="next",
            replace_existing=True,
            misfire_grace_time=None,
        )
