"""Health and whole-manager actions."""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import APIRouter

from fleet import __version__
from fleet.api.deps import ManagerDep
from fleet.api.schemas import StopBody

router = APIRouter(tags=["system"])


@router.get("/health")
def health(manager: ManagerDep) -> dict[str, Any]:
    return {
        "status": "stopping" if manager.shutdown_requested else "ok",
        "version": __version__,
        "pid": os.getpid(),
        "host": manager.hostname,
        "home": str(manager.home.root),
        "url": manager.url,
        "uptime_s": round(time.time() - manager.started_at, 3),
        "nvml": manager.nvml.available,
        "config": str(manager.config.path) if manager.config.path else None,
        "cuda_version": manager.config.agent.cuda_version or None,
        "cudnn_version": manager.config.agent.cudnn_version or None,
    }


@router.post("/shutdown", status_code=202)
def shutdown(body: StopBody, manager: ManagerDep) -> dict[str, Any]:
    """Stop every worker (tasks are stopped, or drained), then the manager."""
    manager.shutdown(drain=body.drain, requeue=body.requeue, by="fleetctl stop")
    return {"status": "stopping", "drain": body.drain, "requeue": body.requeue}
