"""The effective state of a worker: queue tag, then force, then schedule."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from fleet.policy.effective import Effective, Force, effective_state
from fleet.policy.hours import Schedule, make_schedule

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 6, 7, 21, 0, tzinfo=BERLIN)  # a Sunday
HOUR_LATER = "2026-06-07 22:00:00+02:00"


def sched(uptime: list[str], downtime: list[str] | None = None) -> Schedule:
    made = make_schedule(uptime, downtime or [])
    assert made is not None
    return made


TAGS: dict[str, list[str]] = {"-": [], "on": ["force_workers:on"], "off": ["force_workers:off"]}
FORCES: dict[str, Force | None] = {
    "-": None,
    "on": Force("on", NOW + timedelta(hours=1)),
    "off": Force("off", NOW + timedelta(hours=1)),
    "expired": Force("off", NOW),  # expires_at <= now: ignored
}
SCHEDULES: dict[str, Schedule | None] = {
    "-": None,
    "working": sched(["20-00 SUN"]),
    "idle": sched(["8-20 MON"]),
}

# (tag, force, schedule) -> (active, reason)
PRECEDENCE: list[tuple[str, str, str, bool, str]] = [
    ("on", "-", "-", True, "queue tag force_workers:on on q"),
    ("on", "-", "working", True, "queue tag force_workers:on on q"),
    ("on", "-", "idle", True, "queue tag force_workers:on on q"),
    ("on", "on", "-", True, "queue tag force_workers:on on q"),
    ("on", "on", "working", True, "queue tag force_workers:on on q"),
    ("on", "on", "idle", True, "queue tag force_workers:on on q"),
    ("on", "off", "-", True, "queue tag force_workers:on on q"),
    ("on", "off", "working", True, "queue tag force_workers:on on q"),
    ("on", "off", "idle", True, "queue tag force_workers:on on q"),
    ("on", "expired", "-", True, "queue tag force_workers:on on q"),
    ("on", "expired", "working", True, "queue tag force_workers:on on q"),
    ("on", "expired", "idle", True, "queue tag force_workers:on on q"),
    ("off", "-", "-", False, "queue tag force_workers:off on q"),
    ("off", "-", "working", False, "queue tag force_workers:off on q"),
    ("off", "-", "idle", False, "queue tag force_workers:off on q"),
    ("off", "on", "-", False, "queue tag force_workers:off on q"),
    ("off", "on", "working", False, "queue tag force_workers:off on q"),
    ("off", "on", "idle", False, "queue tag force_workers:off on q"),
    ("off", "off", "-", False, "queue tag force_workers:off on q"),
    ("off", "off", "working", False, "queue tag force_workers:off on q"),
    ("off", "off", "idle", False, "queue tag force_workers:off on q"),
    ("off", "expired", "-", False, "queue tag force_workers:off on q"),
    ("off", "expired", "working", False, "queue tag force_workers:off on q"),
    ("off", "expired", "idle", False, "queue tag force_workers:off on q"),
    ("-", "on", "-", True, f"force:on until {HOUR_LATER}"),
    ("-", "on", "working", True, f"force:on until {HOUR_LATER}"),
    ("-", "on", "idle", True, f"force:on until {HOUR_LATER}"),
    ("-", "off", "-", False, f"force:off until {HOUR_LATER}"),
    ("-", "off", "working", False, f"force:off until {HOUR_LATER}"),
    ("-", "off", "idle", False, f"force:off until {HOUR_LATER}"),
    ("-", "expired", "-", True, "no schedule"),
    ("-", "expired", "working", True, "uptime"),
    ("-", "expired", "idle", False, "outside uptime"),
    ("-", "-", "-", True, "no schedule"),
    ("-", "-", "working", True, "uptime"),
    ("-", "-", "idle", False, "outside uptime"),
]


@pytest.mark.parametrize(("tag", "force", "schedule", "active", "reason"), PRECEDENCE)
def test_precedence(tag: str, force: str, schedule: str, active: bool, reason: str) -> None:
    got = effective_state(NOW, ["q"], SCHEDULES[schedule], FORCES[force], {"q": TAGS[tag]})
    assert (got.active, got.reason, got.pullable) == (active, reason, ("q",) if active else ())
    assert got.paused_queues == ({} if active else {"q": reason})


# (downtime spec, active, reason)
DOWNTIME: list[tuple[str, bool, str]] = [
    ("20-00 SUN", False, "downtime"),
    ("8-20 MON", True, "outside downtime"),
]


@pytest.mark.parametrize(("spec", "active", "reason"), DOWNTIME)
def test_downtime_reasons(spec: str, active: bool, reason: str) -> None:
    got = effective_state(NOW, ["q"], sched([], [spec]), None, {})
    assert (got.active, got.reason) == (active, reason)


# (tags per queue, schedule, active, pullable, paused, reason)
TWO_QUEUES: list[tuple[dict[str, list[str]], str, bool, tuple[str, ...], dict[str, str], str]] = [
    (
        {"a": ["force_workers:off"]},
        "working",
        True,
        ("b",),
        {"a": "queue tag force_workers:off on a"},
        "queue tag force_workers:off on a; uptime",
    ),
    (
        {"b": ["force_workers:on"]},
        "idle",
        True,
        ("b",),
        {"a": "outside uptime"},
        "outside uptime; queue tag force_workers:on on b",
    ),
    (
        {"a": ["force_workers:off"], "b": ["force_workers:off"]},
        "working",
        False,
        (),
        {"a": "queue tag force_workers:off on a", "b": "queue tag force_workers:off on b"},
        "queue tag force_workers:off on a; queue tag force_workers:off on b",
    ),
    ({}, "idle", False, (), {"a": "outside uptime", "b": "outside uptime"}, "outside uptime"),
    ({}, "working", True, ("a", "b"), {}, "uptime"),
    (
        {"a": ["force_workers:on", "force_workers:off"]},
        "working",
        True,
        ("b",),
        {"a": "queue tag force_workers:off on a"},
        "queue tag force_workers:off on a; uptime",
    ),
    (
        {"a": [" Force_Workers:ON "]},
        "idle",
        True,
        ("a",),
        {"b": "outside uptime"},
        "queue tag force_workers:on on a; outside uptime",
    ),
    ({"a": ["gpu", "nightly"]}, "working", True, ("a", "b"), {}, "uptime"),
]


@pytest.mark.parametrize(("tags", "schedule", "active", "pullable", "paused", "reason"), TWO_QUEUES)
def test_per_queue_tags(
    tags: dict[str, list[str]],
    schedule: str,
    active: bool,
    pullable: tuple[str, ...],
    paused: dict[str, str],
    reason: str,
) -> None:
    got = effective_state(NOW, ["a", "b"], SCHEDULES[schedule], None, tags)
    assert got == Effective(active, reason, pullable, paused, got.next_change)


EXPIRY = NOW + timedelta(hours=5)
# (queues, tags, force, schedule, next_change); the "working" schedule flips at 00:00, the "idle" one at Mon 08:00
NEXT: list[tuple[list[str], dict[str, list[str]], Force | None, str, datetime | None]] = [
    (["q"], {}, None, "working", datetime(2026, 6, 8, 0, 0, tzinfo=BERLIN)),
    (["q"], {}, None, "idle", datetime(2026, 6, 8, 8, 0, tzinfo=BERLIN)),
    (["q"], {}, None, "-", None),
    (["q"], {}, Force("on", EXPIRY), "working", EXPIRY),  # the schedule cannot matter before the force expires
    (["q"], {}, Force("off", EXPIRY), "-", EXPIRY),
    (["q"], {}, Force("on", None), "working", None),
    (["q"], {}, Force("on", NOW), "working", datetime(2026, 6, 8, 0, 0, tzinfo=BERLIN)),  # expired
    (["q"], {"q": ["force_workers:off"]}, Force("on", EXPIRY), "working", None),
    (["q"], {"q": ["force_workers:on"]}, None, "working", None),
    (["a", "b"], {"a": ["force_workers:on"]}, None, "working", datetime(2026, 6, 8, 0, 0, tzinfo=BERLIN)),
    ([], {}, None, "idle", datetime(2026, 6, 8, 8, 0, tzinfo=BERLIN)),
]


@pytest.mark.parametrize(("queues", "tags", "force", "schedule", "expected"), NEXT)
def test_next_change(
    queues: list[str], tags: dict[str, list[str]], force: Force | None, schedule: str, expected: datetime | None
) -> None:
    assert effective_state(NOW, queues, SCHEDULES[schedule], force, tags).next_change == expected


def test_expiry_is_shown_in_the_local_zone() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=BERLIN)
    force = Force("on", datetime(2026, 11, 25, 20, 0, tzinfo=timezone.utc))
    got = effective_state(now, ["q"], None, force, {})
    assert got.reason == "force:on until 2026-11-25 21:00:00+01:00"


def test_force_without_expiry() -> None:
    got = effective_state(NOW, ["q"], SCHEDULES["working"], Force("off", None), {})
    assert (got.active, got.reason, got.next_change) == (False, "force:off", None)


def test_no_queues() -> None:
    got = effective_state(NOW, [], SCHEDULES["idle"], None, {})
    assert (got.active, got.reason, got.pullable, got.paused_queues) == (False, "outside uptime", (), {})
