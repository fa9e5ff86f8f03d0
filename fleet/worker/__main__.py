"""Entry point of a worker subprocess: ``python -m fleet.worker --home H --worker-id W``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fleet.config import load_config
from fleet.errors import FleetError
from fleet.home import Home
from fleet.store import open_store
from fleet.worker.loop import WorkerLoop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet.worker")
    parser.add_argument("--home", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--config", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        home = Home(Path(args.home))
        store = open_store(home)
        return WorkerLoop(home, store, config, args.worker_id).run()
    except FleetError as exc:
        logging.getLogger("fleet.worker").error("%s", exc.message)
        return 1


if __name__ == "__main__":
    sys.exit(main())
