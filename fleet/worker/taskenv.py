"""The environment a task process gets.

The worker's own environment, minus fleet's secrets, plus the task's
variables, plus what fleet promises every task: ``CUDA_VISIBLE_DEVICES`` and
``NVIDIA_VISIBLE_DEVICES`` (exactly the task's GPUs; empty / ``none`` for a
CPU-only worker), ``FLEET_TASK_ID``, ``FLEET_WORKER_ID`` and
``PYTHONUNBUFFERED=1`` so Python output reaches the log line by line.
"""

from __future__ import annotations

from fleet.gpus import format_gpus
from fleet.models import Task, Worker

# Never handed down to a task: the API token lets its holder run anything here.
WITHHELD = ("FLEET_API_TOKEN",)


def task_environment(task: Task, worker: Worker, base: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in WITHHELD}
    env.update(task.env)
    devices = format_gpus(task.gpus)
    env["CUDA_VISIBLE_DEVICES"] = devices
    env["NVIDIA_VISIBLE_DEVICES"] = devices or "none"
    env["FLEET_TASK_ID"] = task.id
    env["FLEET_WORKER_ID"] = worker.id
    env["PYTHONUNBUFFERED"] = "1"
    return env
