"""Health and whole-manager actions."""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from fleet import __version__
from fleet.api.auth import Caller
from fleet.api.deps import BackendDep, optional_caller
from fleet.api.schemas import StopBody

router = APIRouter(tags=["system"])


@router.get("/health")
def health(backend: BackendDep, caller: Annotated[Caller | None, Depends(optional_caller)]) -> dict[str, Any]:
    """Status and version to anyone; the rest (pid, home, host, ...) and who
    you are only to an authenticated caller."""
    status = {"status": "stopping" if backend.stopping else "ok", "version": __version__}
    if caller is None:
        return status
    return {
        **status,
        "user": caller.user,
        "pid": os.getpid(),
        "host": backend.hostname,
        "home": str(backend.home.root),
        "url": backend.url,
        "uptime_s": round(time.time() - backend.started_at, 3),
        "nvml": backend.nvml.available,
        "config": str(backend.config.path) if backend.config.path else None,
        "cuda_version": backend.config.agent.cuda_version or None,
        "cudnn_version": backend.config.agent.cudnn_version or None,
    }


@router.post("/shutdown", status_code=202)
def shutdown(body: StopBody, backend: BackendDep) -> dict[str, Any]:
    """Stop every worker (tasks are stopped, or drained), then the backend."""
    backend.shutdown(drain=body.drain, requeue=body.requeue, by="fleetctl stop")
    return {"status": "stopping", "drain": body.drain, "requeue": body.requeue}
