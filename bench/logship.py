"""The cost of shipping task logs into a shared store (fleet.worker.logship).

One chatty task prints ``--mb`` MB (default 50) of 100-byte lines as fast as
it can; the task runner of a worker (:class:`fleet.worker.runner.TaskRunner`,
its loop as a worker turns it) runs it against a real PostgreSQL server with
its default durability (``fsync`` and ``synchronous_commit`` on), ``--runs``
times with shipping and as many without, taking turns, in the same run.
"Without" is the same store with shipping turned off (what an SQLite store
does), so the one difference is the shipping.

Per run: the task's own time to print everything (from its first line to its
last, by its own clock: is the task held up?), the wall time from the
attempt's start to its recorded end (which waits for the last chunk), the
CPU time of the runner's process (its loop and, with shipping, the shipping
thread; the database server's own work is not in it), the log's size and the
chunks stored.  Medians are printed.

Run:  .venv/bin/python -m bench.logship [--mb 50] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from fleet.core.config import Config
from fleet.core.home import Home
from fleet.core.models import Runner, Script, TaskSpec, TaskStatus
from fleet.store.postgres import PostgresStore
from fleet.worker.runner import CHECK_S, RunnerProfile, TaskRunner
from tests.factories import live_worker
from tests.pgserver import PgServer, find_bin, running_server

LINE = 100  # bytes a line, newline included

TASK = """
import sys, time
lines, width = int(sys.argv[1]), int(sys.argv[2])
body = b"x" * (width - 20)
out = sys.stdout.buffer
t0 = time.time()
for i in range(lines):
    out.write(b"%018d " % i + body + b"\\n")
out.flush()
print("ELAPSED %.6f" % (time.time() - t0), flush=True)
"""


class Unshipped(PostgresStore):
    """The same PostgreSQL store with shipping off (as an SQLite store does)."""

    @property
    def shared(self) -> bool:
        return False


class DurableServer(PgServer):
    """A server with PostgreSQL's default durability (the tests' server turns fsync off)."""

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                  "-w", "-t", "60", "start")  # fmt: skip


@contextlib.contextmanager
def durable_server() -> Iterator[PgServer]:
    folder, why = find_bin()
    if folder is None:
        raise SystemExit(why)
    with running_server(folder, DurableServer) as server:
        yield server


def one_run(store: PostgresStore, root: Path, mb: float) -> dict[str, float]:
    home = Home(root).ensure()
    runner = TaskRunner(home, store, Config(), RunnerProfile("bench:execute", Runner.EXECUTE, contain=False))
    lines = int(mb * 1e6 / LINE)
    command = [sys.executable, "-c", TASK, str(lines), str(LINE)]
    task_id = store.create_task(TaskSpec(script=Script(command=command, working_dir=str(root))), None, "bench").id
    worker = dataclasses.replace(live_worker("bench:execute", None, []), host="bench")
    task = runner.start_here(task_id, worker, [])
    t0, cpu0 = time.monotonic(), time.process_time()
    runner.start(task, worker)
    last_look = t0
    while runner.proc is not None or runner.ending is not None:
        runner.wait((), CHECK_S)
        look = time.monotonic() - last_look >= CHECK_S
        if look:
            last_look = time.monotonic()
        runner.watch(look)
        runner.flush()
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    ended = store.get_task(task_id)
    if ended.status != TaskStatus.COMPLETED:
        raise RuntimeError(f"task {task_id} ended {ended.status.value}: {ended.status_reason}")
    text = home.task_log(task_id).read_bytes()
    elapsed = float(text.rsplit(b"ELAPSED ", 1)[1].split()[0])
    with psycopg.connect(store.url.conninfo) as pg:
        row = pg.execute("SELECT count(*), coalesce(sum(length(data)), 0) FROM log_chunks WHERE task_id = %s", (task_id,)).fetchone()  # fmt: skip
    assert row is not None
    return {
        "task_s": elapsed,
        "wall_s": wall,
        "runner_cpu_s": cpu,
        "file_mb": len(text) / 1e6,
        "stored_mb": row[1] / 1e6,
        "chunks": row[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=50, help="MB the task prints (default 50)")
    parser.add_argument("--runs", type=int, default=3, help="runs each way, taking turns (default 3)")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"shipping": [], "no shipping": []}
    with durable_server() as server, tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        url = server.url()
        with psycopg.connect(url) as pg:
            version = pg.execute("SHOW server_version").fetchone()
        stores = {"shipping": PostgresStore(url), "no shipping": Unshipped(url)}
        print(f"python {sys.version.split()[0]} | cores {os.cpu_count()} | PostgreSQL {version[0] if version else '?'}")
        for n in range(args.runs):
            for label, store in stores.items():
                results[label].append(one_run(store, Path(tmp) / f"{label.replace(' ', '-')}-{n}", args.mb))
                print(f"  run {n + 1} {label:<12} " + "  ".join(f"{k} {v:.2f}" for k, v in results[label][-1].items()))
        for store in stores.values():
            store.close()
    columns = ["task_s", "wall_s", "runner_cpu_s", "file_mb", "stored_mb", "chunks"]
    print(f"\nmedians of {args.runs} runs, a task printing {args.mb:g} MB in {LINE}-byte lines")
    print(f"{'':<14}" + "".join(f"{c:>13}" for c in columns))
    for label, runs in results.items():
        print(f"{label:<14}" + "".join(f"{statistics.median(r[c] for r in runs):>13.2f}" for c in columns))


if __name__ == "__main__":
    main()
