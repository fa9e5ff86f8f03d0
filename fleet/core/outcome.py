"""How an attempt ended, and the one verdict on it.

:class:`Outcome` is what a runner knows when a task's process is over (its
exit, and why fleet stopped it, if it did); :meth:`Outcome.verdict` turns that
into the task's status and reason.  Every runner uses it: the worker, ``fleetctl
execute``, and the manager for a remote executor's report, so a task ends the
same way wherever it ran.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from fleet.core.models import ExitUsage, TaskStatus
from fleet.core.procs import describe_exit


class StopCause(str, enum.Enum):
    ABORT = "abort"
    TIMEOUT = "timeout"
    WORKER_STOP = "worker_stop"
    LOG = "log"  # its log cannot be written: failed with that reason
    GPU_FAULT = "gpu_fault"  # its GPU was drained for its health: failed, and retried if it may be


@dataclass
class Outcome:
    returncode: int | None
    cause: StopCause | None
    detail: str
    usage: ExitUsage | None = None

    @property
    def description(self) -> str:
        return describe_exit(self.returncode) if self.returncode is not None else "never started"

    def verdict(self, tail: list[str]) -> tuple[TaskStatus, str]:
        """How the attempt ends: (status, reason); a failure's reason carries the
        exit and the log's last lines (``tail``)."""
        if self.cause == StopCause.TIMEOUT:
            return TaskStatus.FAILED, "timeout"
        if self.cause in (StopCause.LOG, StopCause.GPU_FAULT):
            return TaskStatus.FAILED, self.detail
        if self.cause in (StopCause.ABORT, StopCause.WORKER_STOP):
            return TaskStatus.STOPPED, self.detail
        if self.returncode == 0:
            return TaskStatus.COMPLETED, ""
        lines = " | ".join(line for line in tail[-5:] if line.strip())
        return TaskStatus.FAILED, (self.description + (f": {lines}" if lines else ""))[:2000]
