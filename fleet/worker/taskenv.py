"""The environment a task process gets.

The worker's own environment, minus fleet's secrets (:data:`WITHHELD`), plus the task's
variables, plus what fleet promises every task: its devices
(:func:`device_environment`), ``FLEET_TASK_ID``, ``FLEET_WORKER_ID`` and
``PYTHONUNBUFFERED=1`` so Python output reaches the log line by line.
"""

from __future__ import annotations

from fleet.core.gpuspec import format_gpus, is_mig
from fleet.core.models import Task, Worker

# Never handed down to a task: the API token lets its holder run anything here, and the
# store's URL (which may hold its password) or libpq's PGPASSWORD would let the task's code
# write any row of a fleet on PostgreSQL.
WITHHELD = ("FLEET_API_TOKEN", "FLEET_STORE_URL", "PGPASSWORD")


def device_environment(task: Task) -> dict[str, str]:
    """The variables that name a task's GPUs, for a process or a container.

    ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` always: NVML numbers GPUs by PCI bus, CUDA
    fastest-first by default, so without it CUDA's GPU 2 need not be NVML's
    GPU 2 (the one fleet checked, chose and measures).  ``CUDA_VISIBLE_DEVICES``
    holds the indices (exactly the task's GPUs; empty for a CPU-only worker);
    a MIG slice has no index CUDA understands, so there it is the slice's
    ``MIG-...`` UUID.  ``NVIDIA_VISIBLE_DEVICES`` (read by the NVIDIA container
    runtime, another program) gets the UUIDs when NVML gave them, else the
    indices, and ``none`` without GPUs."""
    uuids = task.gpu_uuids if len(task.gpu_uuids) == len(task.gpus) else []
    if uuids and any(is_mig(g) for g in task.gpus):
        cuda = ",".join(uuids)
    else:
        cuda = format_gpus(task.gpus)
    return {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": cuda,
        "NVIDIA_VISIBLE_DEVICES": ",".join(uuids) or cuda or "none",
    }


def task_environment(task: Task, worker: Worker, base: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in WITHHELD}
    env.update(task.env)
    env.update(device_environment(task))
    env["FLEET_TASK_ID"] = task.id
    env["FLEET_WORKER_ID"] = worker.id
    env["PYTHONUNBUFFERED"] = "1"
    return env
