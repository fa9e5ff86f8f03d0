"""Rows of the store as fleet's records, and back: JSON columns, and the
worker columns that may be changed outside a state transition.

The worker's JSON columns are typed records everywhere else (stop request,
schedule, effective state, mode options, pool state); they are encoded and
decoded here, once.  A key missing from a stored object (written by an older
version) takes its default; a column that is not the JSON this version
writes is refused with a :class:`~fleet.errors.StoreError` naming the
worker, the column and the value, never read as something else.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from fleet.core.errors import FleetError, StoreError
from fleet.core.models import (
    DockerMode,
    GpuReservation,
    Runner,
    Script,
    StopRequest,
    Task,
    TaskAttempt,
    TaskRequirements,
    TaskStatus,
    Worker,
    WorkerMode,
    WorkerOptions,
    WorkerState,
)
from fleet.policy.allocate import PoolChild, PoolState, Reservation
from fleet.policy.effective import Effective
from fleet.policy.hours import Schedule, make_schedule
from fleet.policy.queuespec import parse_queue_spec

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
R = TypeVar("R", bound="DataclassInstance")

WORKER_FIELDS = {"pid", "pid_start", "pid_boot", "last_seen", "stop_request", "restarts", "effective", "pool"}


# What a summary row holds in place of a large text it leaves out.
SUMMARY_MARK = "…"
_SUMMARY_EXPR = {
    # diff and setup script: the mark when there is one (the answer says only whether)
    "script": (
        "json_set(script,"
        " '$.diff', CASE WHEN coalesce(json_extract(script, '$.diff'), '') <> '' THEN '{m}' END,"
        " '$.setup_script', CASE WHEN coalesce(json_extract(script, '$.setup_script'), '') <> '' THEN '{m}' END)"
    ),
    # env: the names, each with an empty value
    "env": "(SELECT json_group_object(key, '') FROM json_each(tasks.env))",
    # requirements: the file's text replaced by the mark
    "requirements": (
        "CASE WHEN json_type(requirements, '$.file') = 'text'"
        " THEN json_set(requirements, '$.file', '{m}') ELSE requirements END"
    ),
}


def summary_columns(columns: list[str]) -> str:
    """The select list of a task summary: every column, the large ones summarized."""
    return ", ".join(
        f"{_SUMMARY_EXPR[c].format(m=SUMMARY_MARK)} AS {c}" if c in _SUMMARY_EXPR else f'"{c}"' for c in columns
    )


def row_size(row: Any) -> int:
    """About how many bytes a row's texts take (what a list answer grows by)."""
    return sum(len(v) for v in row if isinstance(v, (str, bytes)))


# 0001-01-02 .. 9999-12-30 UTC: what ``datetime.fromtimestamp`` takes on every platform
TIMESTAMP_MIN, TIMESTAMP_MAX = -62135510400.0, 253402128000.0


def usable_timestamp(value: Any) -> bool:
    """Whether a stored time (epoch seconds) is a number Python can turn into a date."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and TIMESTAMP_MIN <= value <= TIMESTAMP_MAX
    )


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def loads(text: str | None, default: Any) -> Any:
    return default if text is None or text == "" else json.loads(text)


def from_columns(record: type[R], row: Mapping[str, Any], **decoded: Any) -> R:
    """A ``record`` whose fields are the row's columns of the same name, as stored, except
    those given in ``decoded`` (the columns that need decoding)."""
    plain = {name: row[name] for name in _field_names(record) if name not in decoded}
    return record(**plain, **decoded)


@functools.cache
def _field_names(record: type[Any]) -> tuple[str, ...]:
    """A record's field names, read once per record type (a claim decodes two rows)."""
    return tuple(f.name for f in dataclasses.fields(record))


def to_task(row: dict[str, Any]) -> Task:
    return from_columns(
        Task,
        row,
        status=TaskStatus(row["status"]),
        status_reason=row["status_reason"] or "",
        script=Script.from_json(loads(row["script"], {})),
        env=loads(row["env"], {}),
        user=row["user"] or "",
        gpus=loads(row["gpus"], []),
        requirements=TaskRequirements.from_json(loads(row["requirements"], {})),
        docker=DockerMode.from_json(loads(row["docker"], {})),
        env_cached=bool(row["env_cached"]),
        gpu_uuids=loads(row["gpu_uuids"], []),
        runner=Runner(row["runner"]) if row["runner"] else None,
        array_id=row.get("array_id"),
        array_index=row.get("array_index"),
    )


def to_attempt(row: dict[str, Any]) -> TaskAttempt:
    return from_columns(
        TaskAttempt,
        row,
        gpus=loads(row["gpus"], []),
        status=TaskStatus(row["status"]),
        reason=row["reason"] or "",
        gpu_uuids=loads(row["gpu_uuids"], []),
        runner=Runner(row["runner"]) if row["runner"] else None,
    )


def to_reservation(row: dict[str, Any]) -> GpuReservation:
    return from_columns(GpuReservation, row, gpus=tuple(loads(row["gpus"], [])))


def to_worker(row: dict[str, Any]) -> Worker:
    wid = row["id"]
    return from_columns(
        Worker,
        row,
        mode=WorkerMode(row["mode"]),
        gpus=loads(row["gpus"], None),
        queues=loads(row["queues"], []),
        order_fairness=bool(row["order_fairness"]),
        state=WorkerState(row["state"]),
        state_reason=row["state_reason"] or "",
        stop_request=_column(wid, "stop_request", row["stop_request"], stop_request_from_json),
        restarts=row["restarts"] or 0,
        schedule=_column(wid, "schedule", row["schedule"], schedule_from_json),
        effective=_column(wid, "effective", row["effective"], effective_from_json),
        options=_column(wid, "options", row["options"], options_from_json) or WorkerOptions(),
        pool=_column(wid, "pool", row["pool"], pool_from_json),
    )


def worker_columns(worker: Worker) -> dict[str, Any]:
    """The columns ``up`` sets on a worker row (a new one, or one brought back)."""
    return {
        "host": worker.host,
        "mode": worker.mode.value,
        "gpus": dumps(worker.gpus),
        "queues": dumps(worker.queues),
        "order_fairness": int(worker.order_fairness),
        "schedule": dumps(schedule_json(worker.schedule)) if worker.schedule else None,
        "options": dumps(options_json(worker.options)) if worker.options != WorkerOptions() else None,
    }


def worker_updates(fields: dict[str, Any]) -> dict[str, Any]:
    """Columns for the typed values of :data:`WORKER_FIELDS` (None clears a JSON column)."""
    unknown = set(fields) - WORKER_FIELDS
    if unknown:
        raise ValueError(f"unknown worker fields {sorted(unknown)}")
    encode: dict[str, Callable[[Any], dict[str, Any]]] = {
        "stop_request": stop_request_json,
        "effective": effective_json,
        "pool": PoolState.as_json,
    }
    return {k: (dumps(encode[k](v)) if k in encode and v is not None else v) for k, v in fields.items()}


def _column(worker_id: str, column: str, text: str | None, decode: Callable[[dict[str, Any]], T]) -> T | None:
    """A worker's JSON column as its record; None when empty (SQL NULL or JSON null)."""
    try:
        value = loads(text, None)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise TypeError("not a JSON object")
        return decode(value)
    except (ValueError, TypeError, KeyError, AttributeError, FleetError) as exc:
        shown = text if len(text or "") <= 120 else f"{(text or '')[:120]}..."
        raise StoreError(
            f"worker {worker_id}: its stored {column} {shown!r} cannot be read ({exc}); "
            f"stop the worker and start it again with fleetctl up"
        ) from None


# -- the worker's JSON columns -------------------------------------------------------
def stop_request_json(request: StopRequest) -> dict[str, Any]:
    return {"drain": request.drain, "requeue": request.requeue, "by": request.by}


def stop_request_from_json(data: dict[str, Any]) -> StopRequest:
    return StopRequest(bool(data.get("drain")), bool(data.get("requeue")), str(data.get("by") or "fleetctl stop"))


def schedule_json(schedule: Schedule) -> dict[str, Any]:
    return {"kind": schedule.kind, "specs": list(schedule.specs)}


def schedule_from_json(data: dict[str, Any]) -> Schedule | None:
    kind, specs = data.get("kind"), [str(s) for s in data.get("specs") or []]
    if kind not in ("uptime", "downtime"):
        raise ValueError(f"kind {kind!r} is neither uptime nor downtime")
    return make_schedule(specs if kind == "uptime" else [], specs if kind == "downtime" else [])


def effective_json(eff: Effective) -> dict[str, Any]:
    return {
        "active": eff.active,
        "reason": eff.reason,
        "pullable": list(eff.pullable),
        "paused_queues": dict(eff.paused_queues),
        "next_change": eff.next_change.isoformat(timespec="seconds") if eff.next_change else None,
    }


def effective_from_json(data: dict[str, Any]) -> Effective:
    when = data.get("next_change")
    return Effective(
        active=bool(data.get("active", True)),
        reason=str(data.get("reason") or ""),
        pullable=tuple(str(q) for q in data.get("pullable") or []),
        paused_queues={str(q): str(why) for q, why in (data.get("paused_queues") or {}).items()},
        next_change=datetime.fromisoformat(when) if when else None,
    )


def options_json(options: WorkerOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if options.specs:
        out["specs"] = [spec.text() for spec in options.specs]
    if options.max is not None:
        out["max"] = options.max
    if options.docker is not None:
        docker: dict[str, Any] = {"image": options.docker.image}
        if options.docker.args:
            docker["args"] = list(options.docker.args)
        out["docker"] = docker
    return out


def options_from_json(data: dict[str, Any]) -> WorkerOptions:
    docker = data.get("docker")
    limit = data.get("max")
    return WorkerOptions(
        specs=tuple(parse_queue_spec(str(t)) for t in data.get("specs") or []),
        max=limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None,
        docker=(
            DockerMode(str(docker.get("image") or ""), tuple(str(a) for a in docker.get("args") or []))
            if isinstance(docker, dict)
            else None
        ),
    )


def pool_from_json(data: dict[str, Any]) -> PoolState:
    def units(values: Any) -> tuple[int, ...]:
        return tuple(int(g) for g in values or [])

    return PoolState(
        gpus=units(data.get("gpus")),
        free=units(data.get("free")),
        children=tuple(
            PoolChild(str(c["worker"]), str(c["task"]), str(c.get("queue") or ""), units(c.get("gpus")), int(c["pid"]))
            for c in data.get("children") or []
        ),
        reservations=tuple(
            Reservation(str(r["queue"]), str(r["task"]), int(r["need"]), units(r.get("gpus")))
            for r in data.get("reservations") or []
        ),
        waiting={str(q): str(why) for q, why in (data.get("waiting") or {}).items()},
        busy={int(g): str(why) for g, why in (data.get("busy") or {}).items()},
        max=data.get("max") if isinstance(data.get("max"), int) else None,
    )
