"""Working-hours specs: the grammar, the slots, and the next boundary, as tables.

The week used below: Mon 2026-06-01 ... Sun 2026-06-07, Mon 2026-06-08.
DST: Europe/Berlin springs forward Sun 2026-03-29 02:00 -> 03:00 and falls
back Sun 2026-10-25 03:00 -> 02:00; America/New_York springs forward Sun
2026-03-08 02:00 -> 03:00 and falls back Sun 2026-11-01 02:00 -> 01:00.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from fleet.core.errors import EXIT_USAGE, UsageError
from fleet.policy.hours import HELP, WEEK, Schedule, make_schedule, parse_specs

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def at(text: str, tz: str) -> datetime:
    """A naive wall time in ``tz``, or an instant with an offset shown in ``tz``."""
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=ZoneInfo(tz))
    return parsed.astimezone(ZoneInfo(tz))


def schedule(specs: list[str], kind: str) -> Schedule:
    made = make_schedule(specs, []) if kind == "uptime" else make_schedule([], specs)
    assert made is not None
    return made


# (specs, kind, instant (wall time or with offset), tz, working)
WORKING: list[tuple[list[str], str, str, str, bool]] = [
    (["20-00,00-08 SUN"], "uptime", "2026-06-07 21:00", BERLIN, True),
    (["20-00,00-08 SUN"], "uptime", "2026-06-07 07:59", BERLIN, True),
    (["20-00,00-08 SUN"], "uptime", "2026-06-07 00:00", BERLIN, True),
    (["20-00,00-08 SUN"], "uptime", "2026-06-07 23:59", BERLIN, True),
    (["20-00,00-08 SUN"], "uptime", "2026-06-07 08:00", BERLIN, False),
    (["20-00,00-08 SUN"], "uptime", "2026-06-07 19:59", BERLIN, False),
    (["20-00,00-08 SUN"], "uptime", "2026-06-06 21:00", BERLIN, False),
    (["20-00,00-08 SUN"], "uptime", "2026-06-08 01:00", BERLIN, False),
    (["8-20 MON-FRI"], "uptime", "2026-06-01 08:00", "UTC", True),
    (["8-20 MON-FRI"], "uptime", "2026-06-05 19:59", "UTC", True),
    (["8-20 MON-FRI"], "uptime", "2026-06-05 20:00", "UTC", False),
    (["8-20 MON-FRI"], "uptime", "2026-06-01 07:59", "UTC", False),
    (["8-20 MON-FRI"], "uptime", "2026-06-06 10:00", "UTC", False),
    (["22-02 FRI"], "uptime", "2026-06-05 23:00", BERLIN, True),
    (["22-02 FRI"], "uptime", "2026-06-05 22:00", BERLIN, True),
    (["22-02 FRI"], "uptime", "2026-06-06 01:30", BERLIN, True),
    (["22-02 FRI"], "uptime", "2026-06-06 02:00", BERLIN, False),
    (["22-02 FRI"], "uptime", "2026-06-05 21:59", BERLIN, False),
    (["22-02 FRI"], "uptime", "2026-06-05 01:00", BERLIN, False),
    (["22-02 FRI"], "uptime", "2026-06-06 23:00", BERLIN, False),
    (["22-02 SAT"], "uptime", "2026-06-07 01:00", BERLIN, True),
    (["9-5 MON"], "uptime", "2026-06-02 04:00", BERLIN, True),
    (["9-5 MON"], "uptime", "2026-06-01 06:00", BERLIN, False),
    (["10-12 FRI-MON"], "uptime", "2026-06-05 11:00", BERLIN, True),
    (["10-12 FRI-MON"], "uptime", "2026-06-06 11:00", BERLIN, True),
    (["10-12 FRI-MON"], "uptime", "2026-06-07 11:00", BERLIN, True),
    (["10-12 FRI-MON"], "uptime", "2026-06-08 11:00", BERLIN, True),
    (["10-12 FRI-MON"], "uptime", "2026-06-02 11:00", BERLIN, False),
    (["10-12 FRI-MON"], "uptime", "2026-06-04 11:00", BERLIN, False),
    (["10-12 TUE-TUE"], "uptime", "2026-06-02 11:00", BERLIN, True),
    (["10-12 TUE-TUE"], "uptime", "2026-06-03 11:00", BERLIN, False),
    (["17 SAT"], "uptime", "2026-06-06 17:00", BERLIN, True),
    (["17 SAT"], "uptime", "2026-06-06 23:59", BERLIN, True),
    (["17 SAT"], "uptime", "2026-06-06 16:59", BERLIN, False),
    (["17 SAT"], "uptime", "2026-06-07 00:00", BERLIN, False),
    (["0 SUN"], "uptime", "2026-06-07 00:00", BERLIN, True),
    (["00-24 sun"], "uptime", "2026-06-07 23:30", BERLIN, True),
    (["00-24 sun"], "uptime", "2026-06-08 00:00", BERLIN, False),
    (["8,12-14 MON"], "uptime", "2026-06-01 23:00", BERLIN, True),
    (["8,12-14 MON"], "uptime", "2026-06-01 07:00", BERLIN, False),
    (["17-20 SUN-TUE", "13-22 WED"], "uptime", "2026-06-01 18:00", BERLIN, True),
    (["17-20 SUN-TUE", "13-22 WED"], "uptime", "2026-06-03 14:00", BERLIN, True),
    (["17-20 SUN-TUE", "13-22 WED"], "uptime", "2026-06-03 21:30", BERLIN, True),
    (["17-20 SUN-TUE", "13-22 WED"], "uptime", "2026-06-02 14:00", BERLIN, False),
    (["17-20 SUN-TUE", "13-22 WED"], "uptime", "2026-06-04 18:00", BERLIN, False),
    (["20-00 SUN", "00-08 MON"], "uptime", "2026-06-08 07:00", BERLIN, True),
    (["  8 - 20  mon , Tue "], "uptime", "2026-06-02 09:00", BERLIN, True),
    (["  8 - 20  mon , Tue "], "uptime", "2026-06-01 09:00", BERLIN, True),
    (["  8 - 20  mon , Tue "], "uptime", "2026-06-03 09:00", BERLIN, False),
    (["8-20 Mon-fri"], "uptime", "2026-06-04 12:00", BERLIN, True),
    (["20-00,00-08 SUN"], "downtime", "2026-06-07 21:00", BERLIN, False),
    (["20-00,00-08 SUN"], "downtime", "2026-06-08 01:00", BERLIN, True),
    (["22-02 FRI"], "downtime", "2026-06-06 01:30", BERLIN, False),
    (["22-02 FRI"], "downtime", "2026-06-06 02:00", BERLIN, True),
    # fall-back: both occurrences of 02:xx belong to the 02 slot
    (["2-3 SUN"], "uptime", "2026-10-25T02:30:00+02:00", BERLIN, True),
    (["2-3 SUN"], "uptime", "2026-10-25T02:30:00+01:00", BERLIN, True),
    (["2-3 SUN"], "uptime", "2026-10-25T03:00:00+01:00", BERLIN, False),
    # spring-forward: 01:59:59 EST is followed by 03:00 EDT
    (["2-3 SUN"], "uptime", "2026-03-08T07:00:00+00:00", NEW_YORK, False),
    (["3-4 SUN"], "uptime", "2026-03-08T07:00:00+00:00", NEW_YORK, True),
]


@pytest.mark.parametrize(("specs", "kind", "instant", "tz", "expected"), WORKING)
def test_working(specs: list[str], kind: str, instant: str, tz: str, expected: bool) -> None:
    assert schedule(specs, kind).working(at(instant, tz)) is expected


# (specs, kind, tz, after, expected next change as ISO with offset, or None)
NEXT: list[tuple[list[str], str, str, str, str | None]] = [
    (["20-00,00-08 SUN"], "uptime", BERLIN, "2026-06-07 07:00", "2026-06-07T08:00:00+02:00"),
    (["20-00,00-08 SUN"], "uptime", BERLIN, "2026-06-07 08:00", "2026-06-07T20:00:00+02:00"),
    (["20-00,00-08 SUN"], "uptime", BERLIN, "2026-06-07 20:00", "2026-06-08T00:00:00+02:00"),
    (["20-00,00-08 SUN"], "uptime", BERLIN, "2026-06-08 00:00", "2026-06-14T00:00:00+02:00"),
    (["20-00,00-08 SUN"], "uptime", BERLIN, "2026-06-07 07:59:59.5", "2026-06-07T08:00:00+02:00"),
    (["22-02 FRI"], "uptime", BERLIN, "2026-06-05 12:00", "2026-06-05T22:00:00+02:00"),
    (["22-02 FRI"], "uptime", BERLIN, "2026-06-05 23:00", "2026-06-06T02:00:00+02:00"),
    (["22-02 SAT"], "uptime", BERLIN, "2026-06-06 23:00", "2026-06-07T02:00:00+02:00"),
    (["8-20 SAT"], "downtime", BERLIN, "2026-06-06 10:00", "2026-06-06T20:00:00+02:00"),
    (["8-20 MON-FRI"], "uptime", "UTC", "2026-06-05 20:00", "2026-06-08T08:00:00+00:00"),
    (["8-20 MON-FRI"], "uptime", "UTC", "2026-06-03 19:00", "2026-06-03T20:00:00+00:00"),
    (["0 SUN-SAT"], "uptime", BERLIN, "2026-06-07 12:00", None),
    (["00-24 MON,TUE,WED,THU,FRI,SAT,SUN"], "downtime", BERLIN, "2026-06-07 12:00", None),
    # Berlin spring-forward: 02:00 does not exist; a boundary there happens at 03:00 CEST
    (["0-2 SUN"], "uptime", BERLIN, "2026-03-29 01:30", "2026-03-29T03:00:00+02:00"),
    (["2-5 SUN"], "uptime", BERLIN, "2026-03-29 01:00", "2026-03-29T03:00:00+02:00"),
    (["2-5 SUN"], "uptime", BERLIN, "2026-03-29 03:00", "2026-03-29T05:00:00+02:00"),
    (["2-3 SUN"], "uptime", BERLIN, "2026-03-29 00:30", "2026-04-05T02:00:00+02:00"),
    (["1 SAT"], "uptime", BERLIN, "2026-03-28 12:00", "2026-03-29T00:00:00+01:00"),
    # Berlin fall-back: 02:00-03:00 happens twice (CEST, then CET)
    (["2-3 SUN"], "uptime", BERLIN, "2026-10-25 01:30", "2026-10-25T02:00:00+02:00"),
    (["2-3 SUN"], "uptime", BERLIN, "2026-10-25T02:00:00+02:00", "2026-10-25T03:00:00+01:00"),
    (["2-3 SUN"], "uptime", BERLIN, "2026-10-25T02:30:00+01:00", "2026-10-25T03:00:00+01:00"),
    (["0-2 SUN"], "uptime", BERLIN, "2026-10-25 01:00", "2026-10-25T02:00:00+02:00"),
    # New York spring-forward and fall-back
    (["22-02 SAT"], "uptime", NEW_YORK, "2026-03-07 23:00", "2026-03-08T03:00:00-04:00"),
    (["22-02 SAT"], "downtime", NEW_YORK, "2026-03-07 12:00", "2026-03-07T22:00:00-05:00"),
    (["1-2 SUN"], "uptime", NEW_YORK, "2026-11-01 00:30", "2026-11-01T01:00:00-04:00"),
    (["1-2 SUN"], "uptime", NEW_YORK, "2026-11-01T01:00:00-04:00", "2026-11-01T02:00:00-05:00"),
    (["1-2 SUN"], "uptime", NEW_YORK, "2026-11-01T01:30:00-05:00", "2026-11-01T02:00:00-05:00"),
    (["22-02 SAT"], "downtime", NEW_YORK, "2026-10-31 23:00", "2026-11-01T02:00:00-05:00"),
]


@pytest.mark.parametrize(("specs", "kind", "tz", "after", "expected"), NEXT)
def test_next_change(specs: list[str], kind: str, tz: str, after: str, expected: str | None) -> None:
    got = schedule(specs, kind).next_change(at(after, tz))
    assert (got.isoformat() if got is not None else None) == expected


@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK, "UTC"])
@pytest.mark.parametrize("specs", [["20-00,00-08 SUN"], ["2-3 SUN"], ["22-02 SAT", "1 SUN"], ["0-2,3 SUN"]])
@pytest.mark.parametrize(
    "start", ["2026-03-07T12:00:00+00:00", "2026-03-28T12:00:00+00:00", "2026-10-24T12:00:00+00:00"]
)
def test_next_change_is_a_real_flip(tz: str, specs: list[str], start: str) -> None:
    """Walking from flip to flip across a DST week: each is later, and really flips."""
    sched = schedule(specs, "uptime")
    now = at(start, tz)
    for _ in range(6):
        nxt = sched.next_change(now)
        assert nxt is not None and nxt > now and nxt.tzinfo is now.tzinfo
        assert sched.working(nxt) != sched.working(now)
        just_before = (nxt.astimezone(timezone.utc) - timedelta(seconds=1)).astimezone(now.tzinfo)
        assert sched.working(just_before) == sched.working(now)
        now = nxt


def test_next_change_needs_an_aware_datetime() -> None:
    with pytest.raises(ValueError):
        schedule(["8-20 MON"], "uptime").next_change(datetime(2026, 6, 1, 12))


def test_slots() -> None:
    assert parse_specs(["20-00,00-08 SUN"], "--uptime") == {(6, h) for h in [*range(8), 20, 21, 22, 23]}
    assert parse_specs(["22-02 SAT"], "--uptime") == {(5, 22), (5, 23), (6, 0), (6, 1)}
    assert len(parse_specs(["0 SUN-SAT"], "--uptime")) == WEEK
    assert parse_specs([], "--uptime") == frozenset()


# (specs, text the message must contain besides the spec itself)
BAD: list[tuple[list[str], str]] = [
    (["25-08 MON"], "'25'"),
    (["8-25 MON"], "'25'"),
    (["24 MON"], "'24'"),
    (["24-08 MON"], "'24'"),
    (["123-2 MON"], "'123'"),
    (["8-20 FUNDAY"], "'FUNDAY'"),
    (["8-20 MONDAY"], "'MONDAY'"),
    (["8-20"], "missing days"),
    (["MON"], "missing hours"),
    ([""], "empty spec"),
    (["   "], "empty spec"),
    (["8-20 MON TUE extra"], "'TUE extra'"),
    (["08-08 MON"], "'08-08'"),
    (["00-00 MON"], "'00-00'"),
    (["8--20 MON"], "'8--20'"),
    (["x-2 MON"], "'x'"),
    (["8-20 MON-"], "'MON-'"),
    (["-1 MON"], "'-1'"),
    (["8:00-20 MON"], "'8:00'"),
    (["8-20 MON,,TUE"], "'MON,,TUE'"),
    (["8,,9 MON"], "'8,,9'"),
    (["8-20 MON;TUE"], "'MON;TUE'"),
    (["8-20 MON", "8-20 FUNDAY"], "'FUNDAY'"),
]


@pytest.mark.parametrize("kind", ["uptime", "downtime"])
@pytest.mark.parametrize(("specs", "needle"), BAD)
def test_bad_specs_are_refused(kind: str, specs: list[str], needle: str) -> None:
    with pytest.raises(UsageError) as caught:
        schedule(specs, kind)
    err = caught.value
    assert err.exit_code == EXIT_USAGE
    assert err.field == f"--{kind}"
    assert needle in err.message
    assert any(err.message.startswith(f"--{kind} {spec!r}: ") for spec in specs)


def test_both_kinds_are_refused() -> None:
    with pytest.raises(UsageError, match="--uptime and --downtime exclude each other"):
        make_schedule(["8-20 MON"], ["1 SUN"])
    with pytest.raises(UsageError, match=r"agent\.uptime and agent\.downtime exclude each other"):
        make_schedule(["8-20 MON"], ["1 SUN"], field_prefix="agent.")


def test_config_field_names() -> None:
    with pytest.raises(UsageError) as caught:
        make_schedule([], ["8-20 FUNDAY"], field_prefix="agent.")
    assert caught.value.field == "agent.downtime"
    assert caught.value.message.startswith("agent.downtime '8-20 FUNDAY': ")


def test_make_schedule() -> None:
    assert make_schedule([], []) is None
    made = make_schedule(["8-20 MON", "9 TUE"], [])
    assert made is not None and made.kind == "uptime" and made.specs == ("8-20 MON", "9 TUE")


def test_help_explains_wraps() -> None:
    for text in ("22-02 FRI", "FRI-MON", "20-00,00-08 SUN", "midnight", "--uptime", "--downtime"):
        assert text in HELP
