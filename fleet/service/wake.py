"""Commit, then wake whoever must act.

Every operation that gives a worker something to do (a task enqueued, an
abort, a stop, a tag or a force that changes what it may pull, a GPU drained
or returned) calls one of these after its commit.  A wake-up is a datagram
(:func:`fleet.core.wakeups.wake`); a lost one costs only the worker's fallback
poll.  A change of tags or runtime properties also asks the working-hours
driver to recompute the workers' effective states now (:meth:`Wake.schedule`),
once the manager serves (before that there is nothing to recompute for).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from fleet.core import wakeups
from fleet.store import Store


def _nothing() -> None:
    return None


class Wake:
    def __init__(self, home: Path, store: Store) -> None:
        self.home = home
        self.store = store
        self.recompute: Callable[[], None] = _nothing  # the schedule driver's, set when the manager serves

    def workers(self, worker_ids: Iterable[str]) -> None:
        wakeups.wake(self.home, list(worker_ids))

    def worker(self, worker_id: str | None) -> None:
        """The worker that runs a task (none for a task that runs nowhere)."""
        if worker_id:
            self.workers([worker_id])

    def queues(self, names: Iterable[str]) -> None:
        """The live workers that pull from any of ``names``."""
        wanted = set(names)
        if wanted:
            self.workers(w.id for w in self.store.list_workers() if wanted.intersection(w.queues))

    def queue(self, name: str | None) -> None:
        if name is not None:
            self.queues([name])

    def everyone(self) -> None:
        """Every live worker (a GPU was drained or returned)."""
        self.workers(w.id for w in self.store.list_workers())

    def schedule(self) -> None:
        """A tag or a runtime property changed: effective states are recomputed now."""
        self.recompute()
