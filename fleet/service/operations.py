"""The service bundle: every operation, built once by the manager over its
store and handed to the API (:class:`fleet.api.deps.Backend`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from fleet.core.config import Config
from fleet.core.home import Home
from fleet.core.nvml import Nvml
from fleet.manager.leases import Leases
from fleet.service.arrays import Arrays
from fleet.service.gpus import Gpus
from fleet.service.queues import Queues
from fleet.service.remote import Remote
from fleet.service.tasklogs import TaskLogs
from fleet.service.tasks import Tasks
from fleet.service.wake import Wake
from fleet.service.workers import Processes, Workers
from fleet.store import Store


@dataclass(frozen=True)
class Service:
    store: Store  # for reads that are no operation's (the Prometheus collector)
    wake: Wake
    tasks: Tasks
    logs: TaskLogs
    arrays: Arrays
    queues: Queues
    workers: Workers
    gpus: Gpus
    remote: Remote


def build_service(
    store: Store,
    home: Home,
    config: Config,
    *,
    processes: Processes,
    leases: Leases,
    nvml: Nvml,
    hostname: str,
    lock: threading.RLock,
) -> Service:
    wake = Wake(home.root, store, hostname)
    tasks = Tasks(store, wake, config)
    return Service(
        store=store,
        wake=wake,
        tasks=tasks,
        logs=TaskLogs(store, home, hostname),
        arrays=Arrays(tasks),
        queues=Queues(store, wake),
        workers=Workers(store, wake, processes, config, hostname, nvml, lock),
        gpus=Gpus(store, wake, nvml, hostname),
        remote=Remote(tasks, store, leases, home, config, hostname),
    )
