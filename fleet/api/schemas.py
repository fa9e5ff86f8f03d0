"""Request bodies.  Every field is checked here, so a bad request gets a 422
naming the field and never reaches the store.

Types are strict: ``"5"`` or ``true`` is not a priority, ``"yes"`` is not a
boolean; JSON numbers still fill float fields."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from fleet.errors import UsageError
from fleet.validate import env_name, queue_name


def as_value_error(check: Callable[[str], str]) -> Callable[[str], str]:
    """Run one of :mod:`fleet.validate`'s checks as a pydantic validator, so a
    bad value gets its readable message ("invalid task id 'x': expected ...")."""

    def run(value: str) -> str:
        try:
            return check(value)
        except UsageError as exc:
            raise ValueError(exc.message) from None

    return run


QueueName = Annotated[str, AfterValidator(as_value_error(queue_name))]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TaskCreate(Strict):
    command: list[Annotated[str, Field(min_length=1, max_length=100_000)]] = Field(min_length=1, max_length=10_000)
    working_dir: str = Field(min_length=1, max_length=4096)
    queue: QueueName | None = None
    name: str = Field("", max_length=256)
    env: dict[str, Annotated[str, Field(max_length=100_000)]] = Field(default_factory=dict)
    priority: int = Field(0, ge=-1_000_000, le=1_000_000)
    timeout: float | None = Field(None, gt=0, le=365 * 24 * 3600, allow_inf_nan=False)
    retries: int = Field(0, ge=0, le=1000)
    gpus: int | None = Field(None, ge=0, le=1024)
    user: str = Field("", max_length=256)

    @field_validator("working_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not os.path.isabs(value) or "\0" in value:
            raise ValueError("expected an absolute path")
        return value

    @field_validator("command")
    @classmethod
    def _no_nul(cls, value: list[str]) -> list[str]:
        if any("\0" in part for part in value):
            raise ValueError("command arguments cannot contain NUL characters")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            try:
                env_name(key)
            except UsageError as exc:
                raise ValueError(exc.message) from None
            if "\0" in val:
                raise ValueError(f"value of {key} contains a NUL character")
        return value


class EnqueueBody(Strict):
    queue: QueueName
    head: bool = False


class CloneBody(Strict):
    queue: QueueName | None = None
    name: str | None = Field(None, max_length=256)


class AbortBody(Strict):
    reason: str = Field("", max_length=1000)


class QueueCreate(Strict):
    name: QueueName
    tags: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(default_factory=list, max_length=100)


class QueueUpdate(Strict):
    tags: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(max_length=100)


class WorkersCreate(Strict):
    queues: list[str] = Field(min_length=1, max_length=100)
    gpus: str | None = Field(None, min_length=1, max_length=200)
    cpu_only: bool = False
    order_fairness: bool = False
    create_queue: bool = False


class StopBody(Strict):
    drain: bool = False
    requeue: bool = False
