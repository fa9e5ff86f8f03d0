"""Entry point of a worker subprocess: ``python -m fleet.worker --home H --worker-id W``.

A dynamic pool or services worker runs :class:`~fleet.worker.gpupool.PoolLoop`;
the per-task worker it starts for each task is this entry point again with
``--task ID --run-as ID --parent PID``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fleet.core.config import load_config
from fleet.core.errors import FleetError
from fleet.core.home import Home
from fleet.core.models import WorkerMode
from fleet.store import open_store
from fleet.worker.gpupool import PoolLoop
from fleet.worker.loop import TaskWorker, WorkerLoop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet.worker")
    parser.add_argument("--home", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--config", default=None)
    parser.add_argument("--task", default=None, help="run this claimed task only (a pool's per-task worker)")
    parser.add_argument("--run-as", default=None, help="the per-task worker id")
    parser.add_argument("--parent", type=int, default=None, help="the pool's pid")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        home = Home(Path(args.home))
        store = open_store(home, config.fleet.store.url)
        if args.task is not None:
            task_worker = TaskWorker(home, store, config, args.worker_id, args.task, args.run_as or args.worker_id)
            return task_worker.run(args.parent)
        if store.get_worker(args.worker_id).mode != WorkerMode.STATIC:
            return PoolLoop(home, store, config, args.worker_id).run()
        return WorkerLoop(home, store, config, args.worker_id).run()
    except FleetError as exc:
        logging.getLogger("fleet.worker").error("%s", exc.message)
        return 1


if __name__ == "__main__":
    sys.exit(main())
