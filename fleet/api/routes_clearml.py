"""ClearML-compatible calls, so ClearML's documented curl commands work as written.

``POST /workers.set_runtime_properties`` and ``POST /queues.update`` take
ClearML's bodies and answer in ClearML's envelope (``meta`` + ``data``);
errors keep the envelope with ``result_code`` set to the HTTP status.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fleet.api.bounds import ExpiryOrZero
from fleet.api.deps import ServiceDep
from fleet.core.errors import FleetError
from fleet.core.validate import worker_id as check_worker_id

router = APIRouter(tags=["clearml"])
API_VERSION = "2.30"


class _Prop(BaseModel):
    model_config = ConfigDict(extra="ignore")
    key: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
    value: str = Field("", max_length=200)
    expiry: ExpiryOrZero | None = None  # the REST route's range (fleet.api.bounds); 0 deletes


class _SetRuntimeProperties(BaseModel):
    model_config = ConfigDict(extra="ignore")
    worker: str = Field(min_length=1, max_length=128)
    runtime_properties: list[_Prop] = Field(max_length=100)


class _QueueUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    queue: str = Field(min_length=1, max_length=64)
    tags: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(None, max_length=100)


def _envelope(endpoint: str, data: dict[str, Any], code: int = 200, msg: str = "OK") -> JSONResponse:
    meta = {
        "id": uuid.uuid4().hex,
        "trx": uuid.uuid4().hex,
        "endpoint": {"name": endpoint, "requested_version": API_VERSION, "actual_version": API_VERSION},
        "result_code": code,
        "result_subcode": 0,
        "result_msg": msg,
        "error_stack": "",
        "error_data": {},
    }
    return JSONResponse({"meta": meta, "data": data}, status_code=code)


async def _body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise FleetError("body: expected a JSON object") from None


@router.post("/workers.set_runtime_properties")
async def set_runtime_properties(request: Request, service: ServiceDep) -> JSONResponse:
    endpoint = "workers.set_runtime_properties"
    try:
        body = _SetRuntimeProperties.model_validate(await _body(request))
        check_worker_id(body.worker)
        service.workers.worker(body.worker)
        for prop in body.runtime_properties:
            if prop.expiry == 0:  # ClearML: expiry 0 deletes the property
                service.workers.clear_property(body.worker, prop.key, "clearml-api", missing_ok=True)
            else:
                service.workers.set_property(body.worker, prop.key, prop.value, prop.expiry, "clearml-api")
    except ValidationError as exc:
        first = exc.errors()[0]
        return _envelope(endpoint, {}, 400, f"Validation error ({'.'.join(map(str, first['loc']))}: {first['msg']})")
    except FleetError as exc:
        return _envelope(endpoint, {}, 400 if exc.http_status >= 500 else exc.http_status, exc.message)
    return _envelope(endpoint, {})


@router.post("/queues.update")
async def queues_update(request: Request, service: ServiceDep) -> JSONResponse:
    endpoint = "queues.update"
    try:
        body = _QueueUpdate.model_validate(await _body(request))
        queue = service.queues.get(body.queue)
        fields: dict[str, Any] = {}
        if body.tags is not None:
            queue = service.queues.set_tags(queue.id, body.tags, "clearml-api")
            fields["tags"] = queue.tags
    except ValidationError as exc:
        first = exc.errors()[0]
        return _envelope(endpoint, {}, 400, f"Validation error ({'.'.join(map(str, first['loc']))}: {first['msg']})")
    except FleetError as exc:
        return _envelope(endpoint, {}, 400 if exc.http_status >= 500 else exc.http_status, exc.message)
    return _envelope(endpoint, {"updated": 1 if fields else 0, "fields": fields})
