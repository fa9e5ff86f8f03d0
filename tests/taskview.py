"""A task that reports what it saw, for tests that check allocations from the tasks' own view."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import Fleet

# Run as ``python -c VIEW FILE UNTIL``: sleep UNTIL seconds (or, when it is a path, until that
# file exists), then append {"task", "gpus", "start", "end"} (its CUDA_VISIBLE_DEVICES as ints,
# wall-clock times) to FILE.
VIEW = (
    "import json, os, sys, time; s = time.time(); a = sys.argv[2]\n"
    "if a.startswith('/'):\n    while not os.path.exists(a): time.sleep(0.01)\n"
    "else:\n    time.sleep(float(a))\n"
    "gpus = [int(g) for g in os.environ['CUDA_VISIBLE_DEVICES'].split(',') if g]; "
    "line = json.dumps({'task': os.environ['FLEET_TASK_ID'], 'gpus': gpus, 'start': s, 'end': time.time()}); "
    "open(sys.argv[1], 'a').write(line + '\\n')"
)


def views_of(path: Path) -> dict[str, dict[str, Any]]:
    """Task id -> what it reported."""
    return {v["task"]: v for v in map(json.loads, path.read_text().splitlines())}


def reported(fleet: Fleet, task_id: str, prefix: str, timeout: float = 60) -> dict[str, Any]:
    """Wait for the task to complete; the JSON it printed on its line starting with ``prefix``."""
    assert fleet.cli("wait", task_id, "--timeout", str(timeout)).returncode == 0, fleet.ok("logs", task_id)
    log = fleet.ok("logs", task_id, "--no-timestamps")
    line = next(x for x in log.splitlines() if x.startswith(prefix))
    data: dict[str, Any] = json.loads(line[len(prefix) :])
    return data
