"""CPU and wall time per step of a worker's task, for profiling a drain.

Put this folder first on ``PYTHONPATH`` and name an output folder in
``BENCH_SPANS_DIR``: every worker process (``python -m fleet.worker``)
started under it wraps the task runner's steps (``SPANS`` below, or
``BENCH_SPANS=module:Class.method,...``) in ``time.thread_time_ns`` and
``time.perf_counter_ns`` counters and writes them at exit as
``spans-<pid>.json``.  Then sum them per task::

    PYTHONPATH=bench/spans BENCH_SPANS_DIR=/tmp/spans .venv/bin/python -m bench.throughput
    .venv/bin/python bench/spans/sitecustomize.py /tmp/spans 1000

Other processes are left alone.  A wrapped step's time includes the steps
it calls; the wrappers cost about a microsecond each.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SPANS = (
    "fleet.worker.loop:WorkerLoop._pull",
    "fleet.worker.loop:WorkerLoop._not_pulling",
    "fleet.worker.runner:TaskRunner.claim_next",
    "fleet.worker.runner:TaskRunner.start",
    "fleet.worker.runner:TaskRunner._open_log",
    "fleet.worker.runner:TaskRunner._spawn",
    "fleet.worker.process:TaskProcess.start",
    "subprocess:Popen.__init__",
    "fleet.core.contain:Attempt.create_cgroup",
    "fleet.worker.runner:TaskRunner.wait",
    "fleet.worker.runner:TaskRunner.watch",
    "fleet.worker.runner:TaskRunner._finish",
    "fleet.worker.process:TaskProcess.finish",
    "fleet.core.contain:Attempt.remove",
    "fleet.worker.runner:TaskRunner.flush",
)

totals: dict[str, list[int]] = {}  # step -> [calls, CPU ns, wall ns]


def wrap(spec: str) -> None:
    """Count the calls and time of ``module:Owner.name``."""
    module, path = spec.split(":")
    owner: Any = importlib.import_module(module)
    *outer, name = path.split(".")
    for part in outer:
        owner = getattr(owner, part)
    step: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(step)
    def timed(*args: Any, **kwargs: Any) -> Any:
        cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
        try:
            return step(*args, **kwargs)
        finally:
            entry = totals.setdefault(path, [0, 0, 0])
            entry[0] += 1
            entry[1] += time.thread_time_ns() - cpu
            entry[2] += time.perf_counter_ns() - wall

    setattr(owner, name, timed)


def dump(folder: str) -> None:
    Path(folder, f"spans-{os.getpid()}.json").write_text(json.dumps(totals))


def report(folder: str, tasks: int) -> None:
    """Print the steps of every worker's file in ``folder``, per task, most CPU first."""
    summed: dict[str, list[int]] = {}
    for path in Path(folder).glob("spans-*.json"):
        for step, counts in json.loads(path.read_text()).items():
            entry = summed.setdefault(step, [0, 0, 0])
            for i, value in enumerate(counts):
                entry[i] += value
    for step, (calls, cpu, wall) in sorted(summed.items(), key=lambda item: -item[1][1]):
        print(
            f"{step:40s} calls {calls:7d}  CPU/task {cpu / 1e6 / tasks:7.3f} ms  wall/task {wall / 1e6 / tasks:8.3f} ms"
        )


def _install() -> None:
    folder = os.environ.get("BENCH_SPANS_DIR")
    if not folder or "fleet.worker" not in getattr(sys, "orig_argv", []):
        return
    specs = os.environ.get("BENCH_SPANS")
    for spec in specs.split(",") if specs else SPANS:
        wrap(spec)
    atexit.register(dump, folder)


if __name__ == "__main__":
    report(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1000)
else:
    _install()
