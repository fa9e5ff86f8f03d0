"""This manager's host in the fleet: its lease, and the hosts that lost theirs.

At start the manager registers its host (name, GPUs, version, API URL: the
``hosts`` table, :mod:`fleet.store.sqlite_hosts`); a thread of its own then
renews the lease every third of ``fleet.host_lease_seconds`` (a thread, so
a long round of supervision never lets it lapse) and, on a shared store,
asks the store to declare lost the hosts whose lease expired (one manager
acts on each: the store's leader lock).  Their tasks that went back to a
queue are announced to this host's workers at once.

A renewal the store refuses (:class:`~fleet.errors.HostLost`) means this host
was declared lost while it was frozen or cut off, and its attempts were
ended (and maybe started elsewhere): ``on_lost`` (the manager's
:meth:`fleet.manager.supervise.WorkerSupervisor.fenced`) kills every task of
this home and restarts its workers, and the host registers again, in a new
epoch.  Its runners' own writes are fenced meanwhile (the store refuses
them), so nothing it still had running records a result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from fleet.core.errors import FleetError, HostLost, NotFound, StoreUnavailable
from fleet.core.hosts import HostInfo
from fleet.store import Store
from fleet.store.faults import Backoff

log = logging.getLogger(__name__)

AFTER_OUTAGE_LEASES = 3  # leases of landing renewals before a host that lost the store judges others again


class HostLease:
    def __init__(
        self,
        store: Store,
        name: str,
        lease_s: float,
        describe: Callable[[], HostInfo],
        on_lost: Callable[[str], None],
        wake_queues: Callable[[list[str]], None],
        *,
        shared: bool,
    ) -> None:
        self.store = store
        self.name = name
        self.lease_s = lease_s
        self.describe = describe
        self.on_lost = on_lost  # told why; kills this host's tasks and restarts its workers
        self.wake_queues = wake_queues
        self.shared = shared  # other hosts share the store: look for lost ones (SQLite: one host)
        self.registered = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # a failed renewal is tried again within a third of the lease at the latest, as renewals go
        self._retry = Backoff(first=min(0.5, self.every_s), cap=self.every_s)
        self._steady_since: float | None = None  # since when this host's renewals have been landing
        self._grace_s = self.lease_s  # how long they must land before this host judges others

    @property
    def every_s(self) -> float:
        return self.lease_s / 3

    def start(self) -> None:
        """Register (or learn that this host was declared lost while its manager
        was away), then renew from a thread of its own."""
        self.turn()
        self._thread = threading.Thread(target=self._run, name="host-lease", daemon=True)
        self._thread.start()

    def stop(self, leave: bool) -> None:
        """Stop renewing; ``leave``: the host leaves the fleet (a clean stop), so no one declares it lost."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if leave and self.registered:
            try:
                self.store.leave_host(self.name, "manager")
            except FleetError as exc:
                log.warning("host %s: could not record that it leaves: %s", self.name, exc)

    def _run(self) -> None:
        while not self._stop.wait(min(self.every_s, self._retry.remaining() or self.every_s)):
            self.turn()

    def turn(self) -> None:
        """Renew (or register), then look for hosts whose lease expired."""
        if not self._retry.ready():
            return
        try:
            self._renew()
            now = time.monotonic()
            if self._steady_since is None:
                self._steady_since = now
            if self.shared and now - self._steady_since >= self._grace_s:
                self._look()
        except StoreUnavailable:  # the store logs the outage once; the lease is tried again soon
            self._steady_since = None
            self._grace_s = AFTER_OUTAGE_LEASES * self.lease_s
            self._retry.failed()
        except FleetError as exc:
            log.error("host %s: lease: %s", self.name, exc)
        else:
            self._retry.ok()

    def _renew(self) -> None:
        """Renew the lease; register when there is none (a new manager: at start
        even when the one before left the host up, for its pid and URL)."""
        try:
            self.store.renew_host(self.name)
        except NotFound:
            if self.registered:
                log.warning("host %s: its lease is gone from the store; registering again", self.name)
        except HostLost as exc:
            self.lost(exc)
            return
        else:
            if self.registered:
                return
        self._register()

    def _register(self) -> None:
        row = self.store.register_host(self.name, self.describe(), lease_seconds=self.lease_s)
        self.registered = True
        log.info("host %s: registered (epoch %d, lease %gs)", self.name, row.epoch, self.lease_s)

    def lost(self, exc: HostLost) -> None:
        """This host was declared lost: kill its tasks, restart its workers, register again."""
        log.error("host %s: %s; killing its tasks and restarting its workers", self.name, exc.message)
        self.registered = False
        self.on_lost(exc.message)
        self._register()

    def _look(self) -> None:
        """Declare lost the hosts whose lease expired.  Only once this host's own
        renewals have landed for a whole lease (since its start, or since the store
        last failed it): when the database itself was away (a restart, a failover),
        no host could renew, and every live one gets a lease's time to do so
        (its renewal is retried at least every third of the lease) before any is
        judged.  After an outage of its own that time is
        :data:`AFTER_OUTAGE_LEASES` leases: the other hosts' connection pools
        reconnect with a back-off that grows with the outage (psycopg_pool: 1,
        2, 4, 8... s), so after a database restart one host may renew seconds
        after another (a CI run saw 7 s with a 6 s lease).  A database outage
        longer than the lease so declares no host lost."""
        started = time.monotonic()
        for lost in self.store.declare_lost_hosts(self.name):
            log.warning(
                "host %s: declared host %s lost (lease expired): workers %s lost; %d task(s) failed, %d queued again",
                self.name,
                lost.name,
                ", ".join(lost.workers) or "none",
                len(lost.failed),
                len(lost.requeued),
            )
            if lost.queues:
                self.wake_queues(lost.queues)
        took = time.monotonic() - started
        if took > self.every_s:
            log.warning("host %s: looking for lost hosts took %.1fs", self.name, took)
