"""GPU allocation: occupancy and the quad queue's wait, with and without reservations.

One seeded stream of tasks for 8 logical GPUs: each task wants 1, 2 or 4
GPUs (queues ``single=1``, ``dual=2``, ``quad=4``; ``quad`` is tried first)
and runs a random short time; arrivals are a Poisson stream offering about
1.5 times what the 8 GPUs can do, so work queues up.

Three runs over the same stream, in the same run of this script:

1. **fleet, real**: a manager with a dynamic pool ``--gpus 0-7 --queue quad=4
   dual=2 single=1``; each task is ``sleep LENGTH``, posted to the API at its
   arrival time.  A task's GPUs count as busy from its claim to its end as
   the store records them (so the per-task worker's start is counted busy).
2. **fleet policy, simulated**: the same :func:`fleet.policy.allocate.allocate`
   driven by a discrete-event simulation of the same arrivals and lengths
   (no start-up cost).
3. **naive first-fit, simulated**: the same simulation with reservations off
   (``reserve=False``): queues tried in the same order, and a head that does
   not fit is passed by smaller requests behind it (ClearML's open-source
   behaviour).

Figures: GPU occupancy = busy GPU-seconds / available GPU-seconds over the
time some task was waiting in a queue; the quad queue's wait (queued to
start), mean and max; the same for all tasks; the makespan.

Run:  .venv/bin/python -m bench.allocation [--tasks 60] [--seed 1]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import time
from dataclasses import dataclass

from bench._common import machine, parse_iso, temp_fleet
from fleet.policy.allocate import Head, allocate
from fleet.policy.queuespec import QueueSpec

GPUS = list(range(8))
SPECS = [QueueSpec("quad", 4, 4), QueueSpec("dual", 2, 2), QueueSpec("single", 1, 1)]
SIZE = {"quad": 4, "dual": 2, "single": 1}


@dataclass
class Job:
    name: str
    queue: str
    arrival: float  # seconds after the stream's start
    length: float
    start: float = -1.0
    end: float = -1.0


def stream(count: int, seed: int, load: float = 1.5) -> list[Job]:
    rng = random.Random(seed)
    jobs, t = [], 0.0
    picks = [rng.choices(["single", "dual", "quad"], weights=[4, 4, 2])[0] for _ in range(count)]
    lengths = [round(rng.uniform(0.5, 2.0), 2) for _ in range(count)]
    mean_work = sum(SIZE[q] * n for q, n in zip(picks, lengths, strict=True)) / count
    gap = mean_work / (load * len(GPUS))
    for i, (queue, length) in enumerate(zip(picks, lengths, strict=True)):
        jobs.append(Job(f"j{i:03d}", queue, round(t, 3), length))
        t += rng.expovariate(1 / gap)
    return jobs


def simulate(jobs: list[Job], reserve: bool) -> list[Job]:
    """Run the allocation policy over the stream in simulated time."""
    out = [Job(j.name, j.queue, j.arrival, j.length) for j in jobs]
    arrivals = sorted(out, key=lambda j: j.arrival)
    queued: dict[str, list[Job]] = {s.name: [] for s in SPECS}
    ends: list[tuple[float, str, tuple[int, ...]]] = []
    held: set[int] = set()
    by_name = {j.name: j for j in out}
    now, i = 0.0, 0
    while i < len(arrivals) or ends or any(queued.values()):
        next_arrival = arrivals[i].arrival if i < len(arrivals) else float("inf")
        next_end = ends[0][0] if ends else float("inf")
        now = min(next_arrival, next_end)
        while ends and ends[0][0] <= now:
            _, _, gpus = heapq.heappop(ends)
            held -= set(gpus)
        while i < len(arrivals) and arrivals[i].arrival <= now:
            queued[arrivals[i].queue].append(arrivals[i])
            i += 1
        while True:
            heads = {q: Head(js[0].name) for q, js in queued.items() if js}
            decision = allocate(GPUS, held, {}, SPECS, heads, reserve=reserve)
            if not decision.starts:
                break
            for start in decision.starts:
                job = by_name[start.task_id]
                queued[start.queue].remove(job)
                job.start, job.end = now, now + job.length
                held |= set(start.gpus)
                heapq.heappush(ends, (job.end, job.name, start.gpus))
    return out


def real(jobs: list[Job]) -> tuple[list[Job], str]:
    """Run the stream through a real manager and pool; times from the store."""
    out = [Job(j.name, j.queue, j.arrival, j.length) for j in jobs]
    with temp_fleet() as fleet:
        fleet.fleetctl(
            "up", "--port", "0", "--gpus", "0-7", "--queue", "quad=4", "dual=2", "single=1", "--create-queue"
        )
        with fleet.api() as api:
            deadline = time.monotonic() + 30
            while api.get("/workers").json()["workers"][0]["state_reason"] == "starting":
                if time.monotonic() > deadline:
                    raise RuntimeError("the pool did not start")
                time.sleep(0.05)
            where = machine(api)
            ids: dict[str, str] = {}
            t0 = time.monotonic()
            for job in out:
                delay = t0 + job.arrival - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                body = {"command": ["sleep", str(job.length)], "working_dir": str(fleet.root), "queue": job.queue}
                ids[job.name] = api.post("/tasks", json=body).raise_for_status().json()["id"]
            pending = set(ids.values())
            while pending:
                time.sleep(0.2)
                done = api.get("/tasks", params={"status": "completed,failed,stopped", "limit": 1000}).json()
                pending -= {t["id"] for t in done["tasks"]}
            base: float | None = None
            for job in out:
                task = api.get(f"/tasks/{ids[job.name]}").raise_for_status().json()
                if task["status"] != "completed":
                    raise RuntimeError(f"task {task['id']} ended {task['status']}: {task['status_reason']}")
                queued, start, end = (parse_iso(task[k]) for k in ("queued_at", "started_at", "finished_at"))
                base = queued if base is None else min(base, queued)
                job.arrival, job.start, job.end = queued, start, end
            assert base is not None
            for job in out:
                job.arrival, job.start, job.end = job.arrival - base, job.start - base, job.end - base
    return out, where


def figures(jobs: list[Job]) -> dict[str, float]:
    """Occupancy while work waited, quad wait, overall wait, makespan."""
    events = sorted({j.arrival for j in jobs} | {j.start for j in jobs} | {j.end for j in jobs})
    busy_gs = avail_gs = 0.0
    for a, b in itertools.pairwise(events):
        mid = (a + b) / 2
        if any(j.arrival <= mid < j.start for j in jobs):  # something was waiting
            busy = sum(SIZE[j.queue] for j in jobs if j.start <= mid < j.end)
            busy_gs += busy * (b - a)
            avail_gs += len(GPUS) * (b - a)
    quad = [j.start - j.arrival for j in jobs if j.queue == "quad"]
    waits = [j.start - j.arrival for j in jobs]
    return {
        "occupancy": busy_gs / avail_gs if avail_gs else 1.0,
        "quad_wait_mean": sum(quad) / len(quad),
        "quad_wait_max": max(quad),
        "wait_mean": sum(waits) / len(waits),
        "makespan": max(j.end for j in jobs),
    }


def line(label: str, f: dict[str, float]) -> str:
    return (
        f"{label:<32} occupancy {f['occupancy'] * 100:5.1f}%   quad wait mean {f['quad_wait_mean']:6.2f}s"
        f" max {f['quad_wait_max']:6.2f}s   all waits mean {f['wait_mean']:6.2f}s   makespan {f['makespan']:6.2f}s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-real", action="store_true", help="simulations only")
    args = parser.parse_args()
    jobs = stream(args.tasks, args.seed)
    counts = {q: sum(j.queue == q for j in jobs) for q in SIZE}
    work = sum(SIZE[j.queue] * j.length for j in jobs)
    print(
        f"stream: {len(jobs)} tasks ({counts['quad']} quad, {counts['dual']} dual, {counts['single']} single), "
        f"{work:.0f} GPU-s of work arriving over {jobs[-1].arrival:.1f}s on 8 GPUs (seed {args.seed})"
    )
    if not args.no_real:
        done, where = real(jobs)
        print(f"machine: {where}")
        print(line("fleet, real (reservations)", figures(done)))
        extra = [j.end - j.start - j.length for j in done]
        print(
            f"{'':<32} claim-to-end minus the task's length (a per-task worker's start and exit): "
            f"mean {sum(extra) / len(extra):.2f}s, max {max(extra):.2f}s"
        )
    print(line("fleet policy, simulated", figures(simulate(jobs, reserve=True))))
    print(line("naive first-fit, simulated", figures(simulate(jobs, reserve=False))))


if __name__ == "__main__":
    main()
