"""Queue specs of dynamic pools and services workers: ``--queue quad=4 dual=2
opportunistic=1-4 any`` gives each queue a GPU count: ``NAME=N`` (exactly N),
``NAME=MIN-MAX`` (at least MIN, as many as are free up to MAX), ``NAME=-MAX``
(1 to MAX) or a bare ``NAME`` (each task's own ``--gpus``, default 1).

A record of the worker row (:class:`fleet.core.models.WorkerOptions` holds a
worker's specs, decoded once by the store), so this module imports no other
record module.  Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fleet.core.errors import UsageError
from fleet.core.gpuspec import MAX_GPUS
from fleet.core.validate import queue_name

_COUNT = re.compile(r"^(\d*)(?:-(\d+))?$")
SPEC_HELP = "expected NAME=COUNT, NAME=MIN-MAX or NAME=-MAX with whole numbers of GPUs"


@dataclass(frozen=True)
class QueueSpec:
    """A queue of a dynamic pool and the GPUs each of its tasks gets.

    ``low``/``high`` are None for a bare name: the task's own count decides."""

    name: str
    low: int | None = None
    high: int | None = None

    @property
    def own_count(self) -> bool:
        return self.low is None

    def wants(self, gpus_needed: int | None) -> tuple[int, int]:
        """(MIN, MAX) GPUs for a task of this queue.  A pool hands out at least
        one GPU, so ``--gpus 0`` on a bare-name queue gets one."""
        if self.low is None or self.high is None:
            n = max(1, gpus_needed or 1)
            return n, n
        return self.low, self.high

    def text(self) -> str:
        if self.low is None:
            return self.name
        return f"{self.name}={self.low}" if self.low == self.high else f"{self.name}={self.low}-{self.high}"


def parse_queue_spec(text: str) -> QueueSpec:
    """``quad=4``, ``opportunistic=1-4``, ``x=-4`` (1-4) or a bare name; a bad
    count is a :class:`UsageError` naming it."""
    name, sep, count = text.partition("=")
    queue_name(name, field="queues")
    if not sep:
        return QueueSpec(name)
    match = _COUNT.fullmatch(count)
    if match is None or (not match.group(1) and not match.group(2)):
        raise UsageError(f"--queue {text!r}: {count!r} is not a GPU count; {SPEC_HELP}", field="queues")
    low = int(match.group(1)) if match.group(1) else 1
    high = int(match.group(2)) if match.group(2) is not None else low
    if low < 1 or high < 1:
        raise UsageError(f"--queue {text!r}: a queue needs at least 1 GPU per task", field="queues")
    if high < low:
        raise UsageError(f"--queue {text!r}: range {low}-{high} goes down; write {high}-{low}", field="queues")
    if high > MAX_GPUS:
        raise UsageError(f"--queue {text!r}: more than {MAX_GPUS} GPUs", field="queues")
    return QueueSpec(name, low, high)


def parse_queue_specs(queues: Sequence[str]) -> list[QueueSpec]:
    """Parse every ``--queue`` value; refuse an empty list and a queue named twice."""
    if not queues:
        raise UsageError("--queue: expected at least one queue name", field="queues")
    specs: list[QueueSpec] = []
    seen: set[str] = set()
    for text in queues:
        spec = parse_queue_spec(text)
        if spec.name in seen:
            raise UsageError(f"--queue: queue {spec.name!r} is given twice", field="queues")
        seen.add(spec.name)
        specs.append(spec)
    return specs


def is_dynamic(specs: Iterable[QueueSpec]) -> bool:
    """Dynamic mode: at least one queue carries a GPU count."""
    return any(not s.own_count for s in specs)
