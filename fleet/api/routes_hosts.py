"""Hosts: every host of the fleet with its lease (one store shared by many hosts)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fleet.api.deps import ServiceDep
from fleet.api.serialize import host_json
from fleet.service.host_views import hosts

router = APIRouter(tags=["hosts"])


@router.get("/hosts")
def list_hosts(service: ServiceDep) -> dict[str, Any]:
    """Every registered host, by name: its state (up, lost, left), GPUs, version, API URL,
    and its lease's age on the store's clock."""
    return {"hosts": [host_json(h) for h in hosts(service.store)]}
