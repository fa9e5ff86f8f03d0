"""Simulated hosts for ``bench/multihost.py``: lightweight claimers on the real store.

A simulated host is a dynamic GPU pool without processes.  It registers its
worker row (``<host>:dgpu``, its GPUs and queue specs, as ``fleetctl up
--gpus 0-7 --queue quad=4 dual=2 single=1`` does) and then drives the store
exactly as :class:`fleet.worker.gpupool.PoolLoop` does each turn: peek at each
queue's head (``Store.peek_tasks``), ask the pure
:func:`fleet.policy.allocate.allocate` what to start on its free GPUs (with
its reservations), ``Store.claim_task`` each start under the per-task id
``<host>:gpu<list>``, and repeat while something starts.  A task "runs" for
the seconds its command sleeps (``["sleep", "12.5"]``); then the host records
it completed (``Store.finish_task``) and frees its GPUs.  So every row is
written by the store's own code, through the same calls a real pool makes.

How a host hears of new work, as a real host would (one thread per process
for all its hosts, :func:`wakers`):

- ``datagram`` (one host, SQLite): each host binds its worker's wake-up
  socket in the home of the manager that takes the submissions
  (:class:`fleet.core.wakeups.Listener`), so the service's datagram wakes it;
- ``notices`` (PostgreSQL, where the store has them): the process listens
  to the store's notices (``Store.subscribe``) and wakes the hosts a
  ``wake`` notice names, as a manager's listener does;
- ``poll`` (PostgreSQL without notices): a stand-in, a thread that peeks at
  the queues every ``poll_ms`` and wakes its hosts when a queue's head changed.

Each host also looks on its own every ``FALLBACK_S`` (the pool's fallback
poll) and whenever one of its tasks ends.

A few hosts share a process (one thread each, one connection pool per
process); :func:`run_hosts` is a process's body, started by the bench with
``multiprocessing``'s spawn context.
"""

from __future__ import annotations

import os
import select
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

from fleet.core.errors import StoreUnavailable
from fleet.core.models import Task, TaskStatus, Worker, WorkerMode, WorkerOptions, WorkerState
from fleet.core.wakeups import Listener
from fleet.policy.allocate import Head, PoolState, allocate
from fleet.policy.pool_rules import task_worker_id
from fleet.policy.queuespec import QueueSpec, parse_queue_specs
from fleet.store import Store

FALLBACK_S = 2.0  # a host's own look at the queues when nothing woke it (the pool's poll interval)
MAX_ROUNDS = 64  # allocation rounds per turn, as the pool


@dataclass
class HostFigures:
    """What one process's hosts saw (sent back to the bench)."""

    claim_s: list[float] = field(default_factory=list)  # won claim_task calls, seconds each
    lost_s: list[float] = field(default_factory=list)  # claim_task calls that found the task gone
    claimed: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)  # (task, host, GPUs)
    errors: list[str] = field(default_factory=list)
    cpu_s: float = 0.0  # the processes' CPU time, all told


@dataclass
class Running:
    task: Task
    run_as: str
    gpus: tuple[int, ...]
    ends_at: float  # time.monotonic()


def duration(task: Task) -> float:
    """The seconds a bench task runs: its command is ``sleep SECONDS``."""
    command = task.script.command
    return float(command[-1]) if command and command[0] == "sleep" else 0.0


class SimHost:
    def __init__(self, name: str, store: Store, gpus: int, specs: list[QueueSpec], figures: HostFigures) -> None:
        self.name = name
        self.store = store
        self.specs = specs
        self.pool = list(range(gpus))
        self.figures = figures
        self.wake = threading.Event()
        self.running: dict[str, Running] = {}
        worker = Worker(
            id=f"{name}:dgpu",
            host=name,
            mode=WorkerMode.DYNAMIC,
            gpus=self.pool,
            queues=[s.name for s in specs],
            order_fairness=False,
            state=WorkerState.IDLE,
            state_reason="starting",
            created_at=time.time(),
            options=WorkerOptions(specs=tuple(specs)),
        )
        self.worker = store.register_worker(worker, "bench")
        self.published: tuple[int, ...] | None = None

    def _publish(self) -> None:
        """Publish the free GPUs in the worker's row when they changed, as a real
        pool does (other hosts' managers wake a pool only while it has one free)."""
        in_use = {g for r in self.running.values() for g in r.gpus}
        free = tuple(g for g in self.pool if g not in in_use)
        if free != self.published:
            self.store.update_worker(self.worker.id, pool=PoolState(gpus=tuple(self.pool), free=free))
            self.published = free

    def turn(self) -> None:
        """End the tasks whose time has come, then claim what fits."""
        now = time.monotonic()
        for task_id, run in list(self.running.items()):
            if run.ends_at <= now:
                self._finish(run)
                del self.running[task_id]
        self._fill()
        self._publish()

    def _finish(self, run: Running, reason: str = "") -> None:
        self.store.finish_task(
            run.task.id,
            TaskStatus.COMPLETED,
            exit_code=0,
            reason=reason,
            actor=f"worker:{run.run_as}",
            attempt=run.task.attempt,  # fenced as the runner's writes are
        )

    def _fill(self) -> None:
        limits = {s.name: (len(self.pool) if s.own_count else None) for s in self.specs}
        for _ in range(MAX_ROUNDS):
            in_use = {g for r in self.running.values() for g in r.gpus}
            if len(in_use) == len(self.pool):
                return
            peeked = self.store.peek_tasks(limits)
            heads = {q: Head(t.id, t.gpus_needed) for q, t in peeked.items()}
            decision = allocate(self.pool, in_use, {}, self.specs, heads)
            for start in decision.starts:
                run_as = task_worker_id(self.worker, start.task_id, start.gpus)
                t0 = time.perf_counter()
                task = self.store.claim_task(start.task_id, self.worker, list(start.gpus), run_as)
                spent = time.perf_counter() - t0
                if task is None:  # another host took it since the peek
                    self.figures.lost_s.append(spent)
                    continue
                self.figures.claim_s.append(spent)
                self.figures.claimed.append((task.id, self.name, start.gpus))
                self.running[task.id] = Running(task, run_as, start.gpus, time.monotonic() + duration(task))
            if not decision.starts:
                return

    def next_wait(self) -> float:
        ends = [r.ends_at for r in self.running.values()]
        return max(0.0, min([time.monotonic() + FALLBACK_S, *ends]) - time.monotonic())

    def serve(self, stop: Event) -> None:
        while not stop.is_set():
            try:
                self.turn()
            except StoreUnavailable as exc:
                self.figures.errors.append(f"{self.name}: {exc}")
                time.sleep(0.5)
            self.wake.wait(self.next_wait())
            self.wake.clear()
        for run in self.running.values():  # the bench is over: what still runs ends now
            self._finish(run, "the bench ended")
        self.running.clear()


def poll_heads(store: Store, queues: list[str], hosts: list[SimHost], poll_s: float, stop: Event) -> None:
    """Wake every host of this process when a queue's head changed."""
    seen: dict[str, str] = {}
    limits: dict[str, int | None] = dict.fromkeys(queues)
    while not stop.wait(poll_s):
        try:
            heads = {q: t.id for q, t in store.peek_tasks(limits).items()}
        except StoreUnavailable:
            continue
        if heads and heads != seen:
            for host in hosts:
                host.wake.set()
        seen = heads


def datagrams(home: Path, hosts: list[SimHost], stop: Event) -> None:
    """Wake a host when its worker's wake-up socket in ``home`` gets a datagram."""
    listeners = {Listener(home, h.worker.id): h for h in hosts}
    try:
        while not stop.is_set():
            ready, _, _ = select.select(list(listeners), [], [], 0.5)
            for listener in ready:
                listener.drain()
                listeners[listener].wake.set()
    finally:
        for listener in listeners:
            listener.close()


def notices(store: Store, hosts: list[SimHost], stop: Event) -> None:
    """Wake the hosts that the store's ``wake`` notices name (subscribed again after a failure)."""
    by_name = {h.name: h for h in hosts}
    while not stop.is_set():
        try:
            feed = store.subscribe()
        except StoreUnavailable:
            time.sleep(0.5)
            continue
        if feed is None:  # no feed of notices (SQLite): wake_mode says poll
            return
        try:
            while not stop.is_set():
                for notice in feed.wait(0.5):
                    host = by_name.get(getattr(notice, "host", ""))
                    if host is not None:
                        host.wake.set()
        except StoreUnavailable:
            continue
        finally:
            feed.close()


def wake_mode(store: Store) -> str:
    """``notices`` where the store has a feed of them, else ``poll`` (see the module's docstring)."""
    feed = store.subscribe()
    if feed is None:
        return "poll"
    feed.close()
    return "notices"


def run_hosts(
    url: str,
    names: list[str],
    gpus: int,
    specs: list[str],
    wake: str,
    poll_ms: float,
    ready: Queue[str],
    stop: Event,
    results: Queue[HostFigures],
) -> None:
    """A process's body: register ``names`` on the store at ``url`` (a
    PostgreSQL URL, or a SQLite file's path), say ready, serve until ``stop``,
    send the figures back.  ``wake``: ``notices``, ``poll`` or
    ``datagram:<FLEET_HOME>`` (how the hosts hear of new work)."""
    store = open_bench_store(url)
    figures = HostFigures()
    parsed = parse_queue_specs(specs)
    hosts = [SimHost(name, store, gpus, parsed, figures) for name in names]
    if wake.startswith("datagram:"):
        waker = threading.Thread(target=datagrams, args=(Path(wake.split(":", 1)[1]), hosts, stop))
    elif wake == "notices":
        waker = threading.Thread(target=notices, args=(store, hosts, stop))
    else:
        queues = [s.name for s in parsed]
        waker = threading.Thread(target=poll_heads, args=(store, queues, hosts, poll_ms / 1000, stop))
    threads = [threading.Thread(target=h.serve, args=(stop,), name=h.name, daemon=True) for h in hosts]
    for thread in [*threads, waker]:
        thread.start()
    ready.put(",".join(names))
    for thread in [*threads, waker]:
        thread.join()
    store.close()
    used = os.times()
    figures.cpu_s = used.user + used.system
    results.put(figures)


def open_bench_store(url: str) -> Store:
    """The store at ``url``: PostgreSQL for a ``postgresql://`` URL, else the SQLite file at that path."""
    if url.startswith(("postgresql://", "postgres://")):
        from fleet.store.postgres import PostgresStore

        return PostgresStore(url)
    from fleet.store.sqlite import SQLiteStore

    return SQLiteStore(Path(url))
