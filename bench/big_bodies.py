"""Hostile request bodies against a manager: what they cost it.

One manager with a CPU-only worker.  ``--clients`` threads each send one
``--mb`` MB task body at once (an env value that large), twice: with a
``Content-Length`` header, then chunked (no length).  For each round: the
answers' status codes, the manager's RSS before and at its highest while the
bodies arrive (sampled every 20 ms), and how much the database grew.

Run:  .venv/bin/python -m bench.big_bodies [--clients 8] [--mb 50]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import psutil

from bench._common import TempFleet, temp_fleet

CHUNK = 256 * 1024


def _db_bytes(fleet: TempFleet) -> int:
    return sum(p.stat().st_size for p in fleet.home.glob("fleet.db*"))


def _send(url: str, body: bytes, chunked: bool, out: list[str]) -> None:
    def pieces() -> Iterator[bytes]:
        for start in range(0, len(body), CHUNK):
            yield body[start : start + CHUNK]

    try:
        with httpx.Client(timeout=120) as client:
            content = pieces() if chunked else body
            answer = client.post(url, content=content, headers={"content-type": "application/json"})
            out.append(str(answer.status_code))
    except httpx.HTTPError as exc:  # the manager closed the connection before the client finished sending
        out.append(type(exc).__name__)


def _round(fleet: TempFleet, manager: psutil.Process, url: str, body: bytes, clients: int, chunked: bool) -> str:
    rss_before = manager.memory_info().rss
    db_before = _db_bytes(fleet)
    peak = rss_before
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, manager.memory_info().rss)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    results: list[str] = []
    started = time.monotonic()
    threads = [threading.Thread(target=_send, args=(url, body, chunked, results)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    done.set()
    watcher.join()
    with fleet.api() as api:
        tasks = api.get("/tasks").raise_for_status().json()["total"]
    return (
        f"{'chunked' if chunked else 'Content-Length':15} answers {dict(Counter(results))}, {elapsed:.1f} s; "
        f"manager RSS {rss_before / 2**20:.0f} MB before, {peak / 2**20:.0f} MB at most; "
        f"database grew {(_db_bytes(fleet) - db_before) / 2**20:.2f} MB; tasks stored: {tasks}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--mb", type=int, default=50)
    args = parser.parse_args()
    with temp_fleet() as fleet:
        fleet.fleetctl("up", "--port", "0", "--cpu-only", "--queue", "q", "--create-queue")
        info = json.loads((fleet.home / "manager.json").read_text())
        manager = psutil.Process(int(info["pid"]))
        task = {
            "command": ["true"],
            "working_dir": str(fleet.root),
            "queue": "q",
            "env": {"BIG": "x" * (args.mb * 2**20)},
        }
        body = json.dumps(task).encode()
        print(f"{args.clients} clients at once, each one {len(body) / 2**20:.0f} MB body (POST /api/v1/tasks)")
        for chunked in (False, True):
            print(_round(fleet, manager, f"{info['url']}/api/v1/tasks", body, args.clients, chunked))


if __name__ == "__main__":
    main()
