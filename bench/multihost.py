"""Many hosts on one PostgreSQL store: claims, dispatch, double-booking, a lost host.

The fleet: ``--hosts`` simulated hosts of ``--gpus`` GPUs each (lightweight
claimers, :mod:`bench._simhost`: each registers a dynamic pool's worker row
and claims for it through the real store, the calls a real pool makes, a few
hosts per process) plus ``--managers`` real managers (``fleetctl up --port 0
--gpus 0-7 --queue quad=4 dual=2 single=1`` in their own homes, with
``FLEET_STORE_URL`` and ``FLEET_WORKER_NAME``, as the tests' ``hosts``
fixture starts them), all on one PostgreSQL database.

The load: ``--tasks`` tasks submitted through the managers' APIs (in turn)
at ``--rate`` per second (Poisson arrivals), asking for 1, 2 or 4 GPUs (50,
30, 20 %; queues ``single``, ``dual``, ``quad``), each ``sleep``-ing a time
drawn so that about ``--load`` of the fleet's GPUs are busy (uniform between
half and one and a half times the mean).  A simulated host "runs" a task by
holding its GPUs for that time; a real manager runs it.

Figures:

- claim: seconds one ``Store.claim_task`` takes on a simulated host (won
  claims), and how many claims found their task already taken (lost races);
- enqueue -> start: the attempt's start minus the task's queued time, both
  as the store records them, for the simulated hosts and the real managers;
- double-booked: from the store's attempts, two attempts on the same host
  and GPU whose times overlap (there must be none), and a task claimed by
  two hosts or run more than once;
- lost host: a task running on a real manager, every process of that
  manager's home stopped (SIGSTOP); the seconds until the task's next attempt
  starts on another host (goal: lease + 5 s).  Needs host leases
  (``fleet.host_lease_seconds``); without them it says so.

Baseline, in the same run: the same load on one simulated host on SQLite
(one manager's home; that manager only takes the submissions), with the task
times scaled so that the same share of its GPUs is busy.

How a simulated host hears of new work: see :mod:`bench._simhost` (a
watcher per process, ``--poll-ms``, stands in for the cross-host wake-up).
The bench starts its own PostgreSQL (``initdb`` into a temporary folder,
:mod:`tests.pgserver`) unless given ``--url`` (a database it may fill:
use an empty one).

Run:  .venv/bin/python -m bench.multihost [--quick] [--url URL] [--hosts 100] [--tasks 600]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing
import random
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess

import psutil

from bench._common import PYTHON, TempFleet, percentile, temp_fleet
from bench._simhost import HostFigures, open_bench_store, run_hosts, wake_mode
from fleet.core.errors import Conflict
from fleet.core.models import TaskStatus
from fleet.metrics.report import Attempt
from fleet.store import Store

SPECS = ["quad=4", "dual=2", "single=1"]
QUEUE_OF = {1: "single", 2: "dual", 4: "quad"}
MIX = ((1, 0.5), (2, 0.3), (4, 0.2))  # GPUs asked, share of the tasks
MEAN_GPUS = sum(n * share for n, share in MIX)
GOAL_MS = 500.0  # enqueue -> start, p99
LEASE_S = 5  # the managers' fleet.host_lease_seconds in the lost-host phase


@dataclass
class Load:
    tasks: int
    rate: float  # submissions per second
    mean_s: float  # a task's mean duration
    seed: int = 1


@dataclass
class Figures:
    """One run's figures."""

    label: str
    hosts: int
    claims: HostFigures = field(default_factory=HostFigures)
    enqueue_start: dict[str, list[float]] = field(default_factory=dict)  # kind of host -> seconds
    problems: list[str] = field(default_factory=list)  # double bookings and double runs
    attempts: int = 0
    ended: int = 0
    wall_s: float = 0.0
    wake: str = ""  # how the simulated hosts heard of new work (bench._simhost.run_hosts)
    server_cpu_s: float | None = None  # the PostgreSQL server's CPU time over the run (our own server only)


# -- the fleet ------------------------------------------------------------------------
MANAGER_CONFIG = f"fleet {{\n  poll_interval: 2\n  host_lease_seconds: {LEASE_S}\n}}\n"


def up(fleet: TempFleet, *args: str) -> None:
    first = ("--port", "0") if not (fleet.home / "manager.json").exists() else ()
    fleet.fleetctl("up", *first, *args, "--create-queue")


@contextlib.contextmanager
def simulated_hosts(
    url: str, names: list[str], per_process: int, gpus: int, wake: str, poll_ms: float
) -> Iterator[HostFigures]:
    """The simulated hosts, registered and serving; their figures, filled in once they have stopped."""
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    stop = ctx.Event()
    groups = [names[i : i + per_process] for i in range(0, len(names), per_process)]
    procs: list[SpawnProcess] = []
    for group in groups:
        proc = ctx.Process(target=run_hosts, args=(url, group, gpus, SPECS, wake, poll_ms, ready, stop, results))
        proc.start()
        procs.append(proc)
    figures = HostFigures()
    try:
        for _ in groups:
            ready.get(timeout=300)
        yield figures
    finally:
        stop.set()
        for _ in procs:
            part: HostFigures = results.get(timeout=300)
            figures.claim_s += part.claim_s
            figures.lost_s += part.lost_s
            figures.claimed += part.claimed
            figures.errors += part.errors
            figures.cpu_s += part.cpu_s
        for proc in procs:
            proc.join(timeout=60)


def stream(load: Load, fronts: Sequence[TempFleet], scale: float = 1.0) -> list[str]:
    """Submit ``load`` through the managers' APIs in turn; the task ids.  Task
    times are multiplied by ``scale`` (the baseline's smaller fleet)."""
    rng = random.Random(load.seed)
    clients = [f.api() for f in fronts]
    ids: list[str] = []
    due = time.monotonic()
    try:
        for i in range(load.tasks):
            n = rng.choices([n for n, _ in MIX], weights=[w for _, w in MIX])[0]
            seconds = load.mean_s * scale * rng.uniform(0.5, 1.5)
            front = fronts[i % len(fronts)]
            body = {"command": ["sleep", f"{seconds:.3f}"], "working_dir": str(front.root), "queue": QUEUE_OF[n]}
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            answer = clients[i % len(clients)].post("/tasks", json=body)
            ids.append(answer.raise_for_status().json()["id"])
            due += rng.expovariate(load.rate)
    finally:
        for client in clients:
            client.close()
    return ids


def wait_ended(store: Store, ids: list[str], timeout: float) -> int:
    """Until no task is queued or running (or ``timeout``); how many of ``ids`` ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, left = store.list_tasks(status=[TaskStatus.QUEUED, TaskStatus.IN_PROGRESS], limit=1, summary=True)
        if left == 0:
            break
        time.sleep(0.5)
    _, left = store.list_tasks(status=[TaskStatus.QUEUED, TaskStatus.IN_PROGRESS], limit=1, summary=True)
    return len(ids) - left


# -- what the store recorded ---------------------------------------------------------------
def double_bookings(attempts: Sequence[Attempt]) -> list[str]:
    """Two attempts on one host's GPU at once, a task run twice: one line each."""
    found: list[str] = []
    per_gpu: dict[tuple[str, int], list[Attempt]] = defaultdict(list)
    for a in attempts:
        for gpu in a.gpus:
            per_gpu[(a.host, gpu)].append(a)
    for (host, gpu), runs in per_gpu.items():
        runs.sort(key=lambda a: a.started_at)
        for before, after in itertools.pairwise(runs):
            end = before.finished_at if before.finished_at is not None else float("inf")
            if after.started_at < end:
                found.append(f"{host} GPU {gpu}: task {before.task} and task {after.task} overlap")
    runs_of: dict[str, int] = defaultdict(int)
    for a in attempts:
        runs_of[a.task] += 1
    found += [f"task {task} ran {n} times" for task, n in runs_of.items() if n > 1]
    return found


def claimed_twice(claims: HostFigures) -> list[str]:
    hosts_of: dict[str, list[str]] = defaultdict(list)
    for task, host, _ in claims.claimed:
        hosts_of[task].append(host)
    return [f"task {t} claimed by {', '.join(h)}" for t, h in hosts_of.items() if len(h) > 1]


def read_figures(figures: Figures, store: Store, ids: list[str]) -> None:
    wanted = set(ids)
    attempts = [a for a in store.attempts_between(0, time.time() + 3600) if a.task in wanted]
    figures.attempts = len(attempts)
    figures.problems = double_bookings(attempts) + claimed_twice(figures.claims)
    for a in attempts:
        if a.queued_at is not None and a.attempt == 1:
            kind = "simulated" if a.host.startswith("sim") else "managers"
            figures.enqueue_start.setdefault(kind, []).append(a.started_at - a.queued_at)


# -- the runs ------------------------------------------------------------------------------
def run_postgres(url: str, server: int | None, args: argparse.Namespace, load: Load) -> tuple[Figures, str]:
    """The fleet on PostgreSQL; its figures and the lost-host phase's line."""
    names = [f"sim{i:03d}" for i in range(args.hosts)]
    figures = Figures(f"postgres, {args.hosts}+{args.managers} hosts", args.hosts + args.managers)
    store = open_bench_store(url)
    with contextlib.ExitStack() as stack:
        managers = []
        for i in range(args.managers):
            env = {"FLEET_STORE_URL": url, "FLEET_WORKER_NAME": f"host{i}"}
            manager = stack.enter_context(temp_fleet(MANAGER_CONFIG, env))
            up(manager, "--gpus", f"0-{args.gpus - 1}", "--queue", *SPECS)  # the first one migrates the schema
            managers.append(manager)
        figures.wake = wake_mode(store)
        sims = simulated_hosts(url, names, args.per_process, args.gpus, figures.wake, args.poll_ms)
        with sims as figures.claims:
            t0, cpu0 = time.monotonic(), server_cpu(server)
            ids = stream(load, managers)
            figures.ended = wait_ended(store, ids, timeout=load.mean_s * 3 + 120)
            figures.wall_s = time.monotonic() - t0
            if server is not None:
                figures.server_cpu_s = server_cpu(server) - cpu0
        read_figures(figures, store, ids)
        lost = lost_host(store, managers)
    store.close()
    return figures, lost


def run_sqlite(args: argparse.Namespace, load: Load, capacity: int) -> Figures:
    """One simulated host on SQLite (a manager's home; the manager takes the submissions)."""
    figures = Figures("sqlite, 1 host", 1)
    with temp_fleet() as front:
        up(front, "--cpu-only", "--queue", "front")
        store = open_bench_store(str(front.home / "fleet.db"))
        for spec in SPECS:
            with contextlib.suppress(Conflict):
                store.create_queue(spec.split("=")[0], [], "bench")
        scale = args.gpus / capacity
        figures.wake = f"datagram:{front.home}"
        with simulated_hosts(str(front.home / "fleet.db"), ["sim000"], 1, args.gpus, figures.wake, 0) as figures.claims:
            t0 = time.monotonic()
            ids = stream(load, [front], scale)
            figures.ended = wait_ended(store, ids, timeout=load.mean_s * scale * 3 + 120)
            figures.wall_s = time.monotonic() - t0
        read_figures(figures, store, ids)
        store.close()
    return figures


def lost_host(store: Store, managers: list[TempFleet]) -> str:
    """Stop every process of the manager running a task; seconds until the task starts elsewhere."""
    for manager in managers:
        up(manager, "--cpu-only", "--queue", "held")
    with managers[0].api() as api:
        body = {"command": ["sleep", "600"], "working_dir": str(managers[0].root), "queue": "held", "retries": 1}
        task_id = api.post("/tasks", json=body).raise_for_status().json()["id"]
    deadline = time.monotonic() + 60
    while (task := store.get_task(task_id)).status != TaskStatus.IN_PROGRESS or not task.host:
        if time.monotonic() > deadline:
            return f"not measured (task {task_id} did not start: {task.status.value})"
        time.sleep(0.1)
    victim = next(m for i, m in enumerate(managers) if task.host == f"host{i}")
    frozen = victim.leftovers()
    for proc in frozen:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGSTOP)
    t0 = time.time()
    try:
        deadline = time.monotonic() + LEASE_S * 4 + 60
        while True:
            again = [a for a in store.attempts(task_id) if a.attempt > task.attempt and a.started_at is not None]
            if again:
                moved = again[0]
                break
            if time.monotonic() > deadline:
                return f"not requeued within {LEASE_S * 4 + 60} s of stopping {task.host} (lease {LEASE_S} s)"
            time.sleep(0.05)
    finally:
        for proc in frozen:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGCONT)
    row = next(h for h in store.list_hosts() if h.name == task.host)
    declared = f"declared lost by {row.lost_by} after {row.lost_at - t0:.2f} s, " if row.lost_at is not None else ""
    assert moved.started_at is not None
    seconds = moved.started_at - t0
    verdict = "met" if seconds <= LEASE_S + 5 else "NOT met"
    with managers[0].api() as api:
        api.post(f"/tasks/{task_id}/abort", json={"reason": "the bench is over"})
    return (
        f"{task.host} stopped (SIGSTOP, all its processes): {declared}its task started on {moved.host}"
        f" after {seconds:.2f} s (lease {LEASE_S} s; goal <= lease + 5 s: {verdict})"
    )


# -- the report -------------------------------------------------------------------------------
def ms(values: Sequence[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:.1f}" if values else "-"


WAKES = {
    "notices": "the store's notices (LISTEN/NOTIFY)",
    "poll": "no notices in this fleet: a watcher peeking every --poll-ms",
    "datagram": "the manager's wake-up datagram",
}


def report(runs: list[Figures]) -> list[str]:
    """One row per run and kind of host: claims (simulated hosts), enqueue -> start, checks."""
    lines = [
        f"{'':<34}{'claim p50':>10}{'p99':>8}{'lost':>7}{'tasks':>7}{'e->s p50':>10}{'p99':>8}{'max':>8}"
        f"{'double':>8}  (ms)"
    ]
    for run in runs:
        claims, lost = run.claims.claim_s, len(run.claims.lost_s)
        for kind, values in sorted(run.enqueue_start.items(), key=lambda kv: kv[0] != "simulated"):
            first = kind == "simulated"
            c50, c99, n_lost = (ms(claims, 50), ms(claims, 99), str(lost)) if first else ("", "", "")
            lines.append(
                f"{run.label + ': ' + kind:<34}{c50:>10}{c99:>8}{n_lost:>7}{len(values):>7}"
                f"{ms(values, 50):>10}{ms(values, 99):>8}{ms(values, 100):>8}"
                f"{(str(len(run.problems)) if first else ''):>8}"
            )
        lines.append(f"{'':<4}wake-ups: {WAKES[run.wake.split(':')[0]]}; {run.ended} tasks ended in {run.wall_s:.0f} s")
        if lost:
            lines.append(
                f"{'':<4}{lost} claims found their task taken by another host"
                f" ({lost / max(1, len(claims)):.1f} per task claimed; p50 {ms(run.claims.lost_s, 50)} ms,"
                f" p99 {ms(run.claims.lost_s, 99)} ms each)"
            )
    return lines


def server_cpu(pid: int | None) -> float:
    """CPU seconds the PostgreSQL server (postmaster ``pid``) has used: its own, its
    live processes' and those of the processes that ended (0 without a server of ours)."""
    if pid is None:
        return 0.0
    master = psutil.Process(pid)
    used = master.cpu_times()
    total = used.user + used.system + used.children_user + used.children_system
    for child in master.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            times = child.cpu_times()
            total += times.user + times.system
    return total


def server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


@contextlib.contextmanager
def database(url: str) -> Iterator[tuple[str, int | None]]:
    """``url``, or a database on a PostgreSQL server of our own (stopped at the end),
    with the server's postmaster pid (None: not ours)."""
    if url:
        yield url, None
        return
    from tests.pgserver import find_bin, running_server

    folder, why = find_bin()
    if folder is None:
        raise SystemExit(f"no --url and {why}")
    with running_server(folder) as server:
        pid = int((server.data / "postmaster.pid").read_text().split()[0])
        yield server.url(server.create_database()), pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="", help="a PostgreSQL database to use (default: start a server)")
    parser.add_argument("--hosts", type=int, default=100, help="simulated hosts (default 100)")
    parser.add_argument("--managers", type=int, default=3, help="real managers (default 3)")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per host (default 8)")
    parser.add_argument("--per-process", type=int, default=10, help="simulated hosts per process (default 10)")
    parser.add_argument("--tasks", type=int, default=600, help="tasks per run (default 600)")
    parser.add_argument("--rate", type=float, default=5.0, help="submissions per second (default 5)")
    parser.add_argument("--load", type=float, default=0.5, help="share of the GPUs kept busy (default 0.5)")
    parser.add_argument("--poll-ms", type=float, default=50.0, help="the wake-up watcher's period (default 50)")
    parser.add_argument("--quick", action="store_true", help="a smoke test of about a minute")
    args = parser.parse_args()
    if args.quick:
        args.hosts, args.managers, args.tasks, args.rate = min(args.hosts, 10), min(args.managers, 2), 40, 4.0

    capacity = (args.hosts + args.managers) * args.gpus
    load = Load(args.tasks, args.rate, args.load * capacity / (args.rate * MEAN_GPUS))
    print(f"python {PYTHON} | cores {psutil.cpu_count()} | mean task {load.mean_s:.1f} s on PostgreSQL")
    sqlite = run_sqlite(args, load, capacity)
    with database(args.url) as (url, server):
        version = server_version(url)
        postgres, lost = run_postgres(url, server, args, load)
    print(
        f"{args.tasks} tasks at {args.rate:g}/s (1/2/4 GPUs: 50/30/20 %), about {args.load:.0%} of the GPUs busy;"
        f" PostgreSQL {version}: {args.hosts} simulated hosts + {args.managers} managers x {args.gpus} GPUs;"
        f" baseline SQLite: 1 simulated host x {args.gpus} GPUs, task times x {args.gpus / capacity:.3f}"
    )
    for line in report([sqlite, postgres]):
        print(line)
    for run in (sqlite, postgres):
        verdict = "none" if not run.problems else "; ".join(run.problems[:5])
        print(f"{run.label}: {run.attempts} attempts checked, GPU double-booked or task run twice: {verdict}")
        cpu = f"simulated hosts {run.claims.cpu_s * 1000 / max(1, run.ended):.0f} ms"
        if run.server_cpu_s is not None:
            cpu = f"PostgreSQL server {run.server_cpu_s * 1000 / max(1, run.ended):.0f} ms, {cpu}"
        print(f"{run.label}: CPU per task: {cpu}")
        if run.claims.errors:
            print(f"{run.label}: store unavailable {len(run.claims.errors)} times: {run.claims.errors[0]}")
    p99 = percentile(postgres.enqueue_start.get("simulated", [0.0]), 99) * 1000
    print(
        f"enqueue -> start p99 on PostgreSQL: {p99:.0f} ms (goal <= {GOAL_MS:.0f} ms: {'met' if p99 <= GOAL_MS else 'NOT met'})"
    )
    print(f"lost host: {lost}")


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
