"""A worker's effective state: may it pull, from which queues, and why.

Precedence per queue, strongest first (SPEC "Scheduling working hours"):

1. a queue tag ``force_workers:on`` / ``force_workers:off`` on that queue
   (on: pull from it whatever the force or the schedule say; off: never).
   Both tags on one queue: off wins, the safe reading of a contradiction.
   Tags are compared after stripping blanks, case-insensitively;
2. the runtime property ``force`` (on / off), until it expires: a force whose
   ``expires_at <= now`` is ignored; ``expires_at`` None never expires;
3. the schedule; no schedule means always working.

``next_change`` is the next instant the result can change by the clock alone:
the force's expiry when a force decides some queue, else the schedule's next
boundary when the schedule decides some queue, else None.  Tags and runtime
properties set by people are not predicted; re-evaluate when they change.

Times in reasons are in ``now``'s zone, ISO with offset, to the second.
Pure: the caller passes ``now``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from fleet.policy.hours import Schedule

__all__ = ["TAG_OFF", "TAG_ON", "Effective", "Force", "effective_state"]

TAG_ON = "force_workers:on"
TAG_OFF = "force_workers:off"


@dataclass(frozen=True)
class Force:
    """The runtime property ``force``: on or off until ``expires_at`` (None: no expiry)."""

    value: Literal["on", "off"]
    expires_at: datetime | None = None

    def live(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


@dataclass(frozen=True)
class Effective:
    active: bool  # the worker may pull from at least one of its queues
    reason: str  # one reason, or the distinct per-queue reasons joined by "; "
    pullable: tuple[str, ...]  # queues it may pull from now, in the worker's order
    paused_queues: dict[str, str] = field(default_factory=dict)  # queue -> why it is paused
    next_change: datetime | None = None  # next instant the result can change by the clock alone


def _stamp(when: datetime, now: datetime) -> str:
    return when.astimezone(now.tzinfo).isoformat(sep=" ", timespec="seconds")


def _base(now: datetime, schedule: Schedule | None, force: Force | None) -> tuple[bool, str, str]:
    """(working, reason, decider) from the force and the schedule, tags aside."""
    if force is not None and force.live(now):
        reason = f"force:{force.value}"
        if force.expires_at is not None:
            reason += f" until {_stamp(force.expires_at, now)}"
        return force.value == "on", reason, "force"
    if schedule is None:
        return True, "no schedule", "none"
    working = schedule.working(now)
    inside = working == (schedule.kind == "uptime")
    return working, schedule.kind if inside else f"outside {schedule.kind}", "schedule"


def _tag(tags: Collection[str]) -> str | None:
    normal = {t.strip().lower() for t in tags}
    if TAG_OFF in normal:
        return TAG_OFF
    if TAG_ON in normal:
        return TAG_ON
    return None


def effective_state(
    now: datetime,
    queues: Sequence[str],
    schedule: Schedule | None,
    force: Force | None,
    queue_tags: Mapping[str, Collection[str]],
) -> Effective:
    """The effective state of a worker serving ``queues`` at ``now`` (aware).

    A worker with no queues is active when force or schedule say so; it has
    nothing to pull either way.
    """
    working, base_reason, decider = _base(now, schedule, force)
    pullable: list[str] = []
    paused: dict[str, str] = {}
    reasons: list[str] = []
    base_used = not queues
    for queue in queues:
        tag = _tag(queue_tags.get(queue, ()))
        if tag is not None:
            may, why = tag == TAG_ON, f"queue tag {tag} on {queue}"
        else:
            may, why, base_used = working, base_reason, True
        if may:
            pullable.append(queue)
        else:
            paused[queue] = why
        if why not in reasons:
            reasons.append(why)
    next_change: datetime | None = None
    if base_used and decider == "force" and force is not None:
        next_change = force.expires_at
    elif base_used and decider == "schedule" and schedule is not None:
        next_change = schedule.next_change(now)
    return Effective(
        active=bool(pullable) if queues else working,
        reason="; ".join(reasons) if reasons else base_reason,
        pullable=tuple(pullable),
        paused_queues=paused,
        next_change=next_change,
    )
