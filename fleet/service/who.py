"""Who asks for an operation."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Who:
    """The caller of an operation: ``user`` is recorded as a task's submitter,
    ``admin`` (the manager's user or root) may change anyone's task, ``actor``
    is written on the events the operation records (``api:alice``,
    ``clearml-api``, ``fleetctl:host:execute``)."""

    user: str
    admin: bool
    actor: str
