"""Per-process CPU and memory for the sampler, by process group.

A task runs in its own session and process group, whose id is the task's
pid; everything it starts (dataloaders, torchrun ranks) stays in that group
unless it leaves on purpose, and fleet signals the group, not one pid.  So a
task's processes are the group's members.

CPU % comes from CPU-time deltas between two readings of the same process
(pid *and* start time), 100 meaning one core; a process seen for the first
time is measured over its whole life so far.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import psutil

log = logging.getLogger(__name__)

MB = 1024 * 1024


@dataclass(frozen=True)
class ProcUsage:
    cpu_percent: float
    rss_mb: float


class ProcessMeter:
    """Remembers each process's last CPU time between ticks."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[float, float, float]] = {}  # pid -> (create_time, cpu_s, at)

    @staticmethod
    def groups(pgids: set[int]) -> dict[int, list[int]]:
        """The live members of each process group in ``pgids`` (one scan of the process table)."""
        out: dict[int, list[int]] = {g: [] for g in pgids}
        if not pgids:
            return out
        for pid in psutil.pids():
            try:
                pgid = os.getpgid(pid)
            except OSError:  # gone since the listing
                continue
            if pgid in out:
                out[pgid].append(pid)
        return out

    def measure(self, pids: list[int], now: float) -> dict[int, ProcUsage]:
        """CPU % and RSS of ``pids``; processes that vanished are left out."""
        out: dict[int, ProcUsage] = {}
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        continue
                    created = proc.create_time()
                    times = proc.cpu_times()
                    rss = proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            cpu_s = times.user + times.system
            last = self._last.get(pid)
            if last is not None and abs(last[0] - created) < 0.05 and now > last[2]:
                percent = (cpu_s - last[1]) / (now - last[2]) * 100
            else:
                percent = cpu_s / max(now - created, 0.01) * 100
            self._last[pid] = (created, cpu_s, now)
            out[pid] = ProcUsage(max(percent, 0.0), rss / MB)
        return out

    def forget_except(self, keep: set[int]) -> None:
        """Drop what is remembered about processes no longer sampled."""
        for pid in list(self._last):
            if pid not in keep:
                del self._last[pid]
