"""GPUs: what each host has, which are drained and why; drain and undrain by hand."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from fleet.api.deps import ManagerDep
from fleet.api.serialize import drain_json
from fleet.drains import MAX_REASON, drain, known_gpus, parse_gpu_ref, undrain
from fleet.gpus import gpu_json, gpu_label, is_mig, parent_gpu

router = APIRouter(tags=["gpus"])


class DrainBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reason: str = Field(default="", max_length=MAX_REASON)


@router.get("/gpus")
def list_gpus(manager: ManagerDep) -> dict[str, Any]:
    """Every GPU unit fleet knows, per host, with its drain (null when in service)."""
    store = manager.store
    drains = {(d.host, d.gpu): d for d in store.drained_gpus()}
    uuids = {u.unit: u.uuid for u in manager.nvml.units()}
    out = []
    for host, units in sorted(known_gpus(store, manager.nvml, manager.hostname).items()):
        mig_parents = {parent_gpu(u) for u in units if is_mig(u)}
        for unit in sorted(u for u in units if u not in mig_parents or (host, u) in drains):
            found = drains.get((host, unit)) or drains.get((host, parent_gpu(unit)))
            out.append(
                {
                    "host": host,
                    "gpu": gpu_json(unit),
                    "name": f"{host}:{gpu_label(unit)}",
                    "parent": parent_gpu(unit) if is_mig(unit) else None,
                    "uuid": uuids.get(unit) if host == manager.hostname else None,
                    "drained": drain_json(found) if found is not None else None,
                }
            )
    return {"gpus": out, "drained": [drain_json(d) for d in drains.values()]}


@router.post("/gpus/{gpu}/drain")
def drain_gpu(gpu: str, manager: ManagerDep, body: DrainBody | None = None) -> dict[str, Any]:
    ref = parse_gpu_ref(gpu)
    done = drain(manager.store, manager.nvml, manager.hostname, ref, (body or DrainBody()).reason, "api")
    manager.wake_all()
    return drain_json(done)


@router.post("/gpus/{gpu}/undrain")
def undrain_gpu(gpu: str, manager: ManagerDep) -> dict[str, Any]:
    ref = parse_gpu_ref(gpu)
    was = undrain(manager.store, manager.nvml, manager.hostname, ref, "api")
    manager.wake_all()
    return {"gpu": ref.name, "was": drain_json(was) if was is not None else None}
