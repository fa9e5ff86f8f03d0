"""GPUs: what each host has, which are drained and why; drain and undrain by hand."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from fleet.api.deps import ServiceDep
from fleet.api.serialize import drain_json, gpu_view_json
from fleet.service.drains import MAX_REASON

router = APIRouter(tags=["gpus"])


class DrainBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reason: str = Field(default="", max_length=MAX_REASON)


@router.get("/gpus")
def list_gpus(service: ServiceDep) -> dict[str, Any]:
    """Every GPU unit fleet knows, per host, with its drain (null when in service)."""
    gpus, drains = service.gpus.all()
    return {"gpus": [gpu_view_json(g) for g in gpus], "drained": [drain_json(d) for d in drains]}


@router.post("/gpus/{gpu}/drain")
def drain_gpu(gpu: str, service: ServiceDep, body: DrainBody | None = None) -> dict[str, Any]:
    return drain_json(service.gpus.drain(gpu, (body or DrainBody()).reason, "api"))


@router.post("/gpus/{gpu}/undrain")
def undrain_gpu(gpu: str, service: ServiceDep) -> dict[str, Any]:
    name, was = service.gpus.undrain(gpu, "api")
    return {"gpu": name, "was": drain_json(was) if was is not None else None}
