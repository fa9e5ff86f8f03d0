"""The manager's ear for the other hosts: notices from the store, passed on here.

A fleet on PostgreSQL has a manager on every host.  A change committed on
another host that gives one of *this* host's workers something to do (a task
in its queue, an abort of its task, a stop) is announced through the store
(:mod:`fleet.core.notices`, :meth:`fleet.service.wake.Wake`), and this
listener, a thread of the manager on a connection of its own
(:meth:`fleet.store.interface.Store.subscribe`), hands it on:

- ``wake`` addressed to this host (``notice.host`` is this manager's host
  name, the ``host`` of the workers it started): a datagram to each id, as a
  local service operation sends (:func:`fleet.core.wakeups.wake`); ``everyone``
  wakes every worker of this host.  Notices for other hosts are ignored, and
  so are this manager's own (its service sent the datagrams already).
- ``schedule`` (a force on/off, a tag change, on any host): the working-hours
  driver recomputes now (:meth:`fleet.manager.hours_driver.ScheduleDriver.recompute`),
  and wakes the workers whose state changed.

When the connection fails (the server stopped, restarted or vanished) the
listener says so once, subscribes again with back-off (0.5 s doubling to
10 s), and once back wakes every worker of this host and recomputes, since
notices sent meanwhile are lost.  Nothing it meets stops the manager; a lost
notice costs only the workers' fallback poll (``fleet.poll_interval``), which
stays.  On SQLite there is no feed (one host: the datagram is enough) and the
thread ends at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from fleet.core import wakeups
from fleet.core.errors import FleetError
from fleet.core.notices import Notice, NoticeKind
from fleet.store import Store
from fleet.store.faults import Backoff
from fleet.store.interface import Subscription

log = logging.getLogger(__name__)

WAIT_S = 1.0  # how long one wait for notices lasts (and so how soon a stop is seen)


class NoticeListener:
    def __init__(self, store: Store, home: Path, hostname: str, recompute: Callable[[], None]) -> None:
        self.store = store
        self.home = home
        self.hostname = hostname
        self.recompute = recompute
        self.backoff = Backoff()
        self.listening = threading.Event()  # set while subscribed (for tests and status)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._down = False  # an outage of the feed has been logged

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="notices", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=WAIT_S + 2)

    def _run(self) -> None:
        lost = False  # notices may have been missed: catch up once subscribed again
        while not self._stop.is_set():
            try:
                subscription = self.store.subscribe()
                if subscription is None:
                    return  # SQLite: nothing to listen to
                try:
                    self._listen(subscription, catch_up=lost)
                finally:
                    self.listening.clear()
                    subscription.close()
            except FleetError as exc:  # the store unavailable (logged once by the store), or refused
                self._failed(str(exc))
                lost = True
            except Exception:  # a bug here must not end the thread: wake-ups would silently wait for polls
                log.exception("notices: unexpected error; listening again after a pause")
                self._failed("unexpected error")
                lost = True

    def _listen(self, subscription: Subscription, *, catch_up: bool) -> None:
        self.listening.set()
        if self._down:
            log.info("notices: listening to the store again")
            self._down = False
        self.backoff.ok()
        if catch_up:
            self._catch_up()
        while not self._stop.is_set():
            for notice in subscription.wait(WAIT_S):
                self.handle(notice)

    def _failed(self, why: str) -> None:
        if not self._down:
            log.warning(
                "notices: not listening to the store (%s); workers here hear of other hosts' changes"
                " at their poll until it is back",
                why,
            )
            self._down = True
        self._stop.wait(self.backoff.failed())

    def handle(self, notice: Notice) -> None:
        """Act on one notice (see the module docstring)."""
        if notice.origin == self.hostname:
            return
        if notice.kind == NoticeKind.SCHEDULE:
            self.recompute()
        elif notice.host == self.hostname:
            wakeups.wake(self.home, self._mine() if notice.everyone else list(notice.workers))

    def _mine(self) -> list[str]:
        return [w.id for w in self.store.list_workers() if w.host == self.hostname]

    def _catch_up(self) -> None:
        log.info("notices: waking this host's workers and recomputing, in case a notice was missed")
        wakeups.wake(self.home, self._mine())
        self.recompute()
