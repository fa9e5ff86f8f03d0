"""Commit, then wake whoever must act.

Every operation that gives a worker something to do (a task enqueued, an
abort, a stop, a tag or a force that changes what it may pull, a GPU drained
or returned) calls one of these after its commit.  A wake-up is a datagram
(:func:`fleet.core.wakeups.wake`) to each worker meant, here; a worker of
another host of a fleet on PostgreSQL (``worker.host`` is not this manager's
host name) is also *announced* through the store, grouped by host
(:meth:`fleet.store.interface.Store.announce`, :mod:`fleet.core.notices`), and
that host's manager sends it the datagram (:mod:`fleet.manager.notices`).  A
lost wake-up costs only the worker's fallback poll; so does a store that is
unavailable just after the commit (the announcement is dropped, the
operation still succeeds).

The datagrams go to every id meant, whatever its host: a socket exists only
for a worker of this home, so the others cost a failed ``sendto``, and a
worker whose host name is not its manager's (an ``up`` with another
``FLEET_WORKER_NAME``) is still reached on its own host.

A change of tags or runtime properties also asks the working-hours driver to
recompute the workers' effective states now (:meth:`Wake.schedule`), once the
manager serves (before that there is nothing to recompute for), and announces
it, so the managers of the other hosts recompute too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from fleet.core import wakeups
from fleet.core.errors import StoreUnavailable
from fleet.core.models import Task, Worker, WorkerMode, WorkerState
from fleet.core.notices import Notice, schedule_notice, wake_notices
from fleet.store import Store

log = logging.getLogger(__name__)


def _nothing() -> None:
    return None


def may_start(worker: Worker) -> bool:
    """Whether a worker of another host may start a newly queued task now, so is
    worth a notice: an idle worker, a pool that published a free GPU (or nothing
    yet), a services worker.  A busy worker or a full pool pulls again by itself
    when a task of its own ends (and polls); waking it anyway cost, with a
    hundred hosts on one queue, a notice, a turn and a claim racing for the same
    row on every host for every submit (``bench/multihost.py``)."""
    if worker.mode == WorkerMode.SERVICES:
        return True
    if worker.mode == WorkerMode.DYNAMIC:
        return worker.pool is None or bool(worker.pool.free)
    return worker.state == WorkerState.IDLE


class Wake:
    def __init__(self, home: Path, store: Store, hostname: str = "") -> None:
        self.home = home
        self.store = store
        self.hostname = hostname  # this manager's host: the workers whose ``host`` it is are reached here
        self.recompute: Callable[[], None] = _nothing  # the schedule driver's, set when the manager serves

    def _send(self, by_host: Mapping[str, Iterable[str]]) -> None:
        """Wake each worker id of each host: a datagram here, a notice for the other hosts."""
        ids = {host: sorted(set(wids)) for host, wids in by_host.items()}
        wakeups.wake(self.home, sorted({wid for wids in ids.values() for wid in wids}))
        self._announce(
            [
                n
                for host, wids in sorted(ids.items())
                if host != self.hostname
                for n in wake_notices(self.hostname, host, wids)
            ]
        )

    def _announce(self, notices: list[Notice]) -> None:
        if not notices:
            return
        try:
            self.store.announce(notices)
        except StoreUnavailable as exc:  # committed already: the workers poll
            log.debug("wake: not announced (%s)", exc)

    def workers(self, worker_ids: Iterable[str]) -> None:
        """Registered workers (their hosts are read from their rows; an id with
        no row, a pool's per-task worker, is woken here only)."""
        wanted = set(worker_ids)
        if not wanted:
            return
        by_host: dict[str, set[str]] = {self.hostname: set(wanted)}
        for worker in self.store.list_workers(include_dead=True):  # a stop may have just marked it dead
            if worker.id in wanted:
                by_host[self.hostname].discard(worker.id)
                by_host.setdefault(worker.host, set()).add(worker.id)
        self._send(by_host)

    def tasks(self, tasks: Iterable[Task]) -> None:
        """The workers running ``tasks``, on their hosts (a task that runs nowhere wakes no one)."""
        by_host: dict[str, set[str]] = {}
        for task in tasks:
            if task.worker:
                by_host.setdefault(task.host or self.hostname, set()).add(task.worker)
        if by_host:
            self._send(by_host)

    def queues(self, names: Iterable[str]) -> None:
        """The live workers that pull from any of ``names``: on this host all of
        them (a datagram is cheap), on the other hosts those that may start a
        task now (:func:`may_start`)."""
        wanted = set(names)
        if wanted:
            by_host: dict[str, set[str]] = {}
            for worker in self.store.list_workers():
                if wanted.intersection(worker.queues) and (worker.host == self.hostname or may_start(worker)):
                    by_host.setdefault(worker.host, set()).add(worker.id)
            self._send(by_host)

    def queue(self, name: str | None) -> None:
        if name is not None:
            self.queues([name])

    def everyone(self) -> None:
        """Every live worker (a GPU was drained or returned)."""
        by_host: dict[str, set[str]] = {}
        for worker in self.store.list_workers():
            by_host.setdefault(worker.host, set()).add(worker.id)
        self._send(by_host)

    def schedule(self) -> None:
        """A tag or a runtime property changed: effective states are recomputed now, on every host."""
        self.recompute()
        self._announce([schedule_notice(self.hostname)])
