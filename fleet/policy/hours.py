"""Working hours: parse ``--uptime`` / ``--downtime`` specs into weekly slots.

A spec is ``"<hours> <days>"``.  A parsed schedule is the set of wall-clock
hour slots ``(weekday, hour)`` it covers, with ``weekday`` as in
:meth:`datetime.weekday` (Monday 0 ... Sunday 6) and ``hour`` 0-23.  Several
specs are a union.

Decisions (ClearML Agent's parser drops ranges starting at hour 0 and crashes
on an entry without days; this one does neither):

* Hours: ``HH-HH`` is start inclusive, end exclusive; ``HH`` alone runs from
  that hour to midnight.  One or two digits.  A start is 0-23; an end is 0-24
  where both ``00`` and ``24`` mean midnight.  Equal ends (``08-08``, also
  ``00-00``) are refused: they could mean nothing or the whole day; write
  ``00-24`` (or ``0``) for a whole day.
* Hours that wrap (``22-02 FRI``) belong to the day they start on: Friday
  22:00 to Saturday 02:00.  ``20-00,00-08 SUN`` is Sunday 00:00-08:00 and
  Sunday 20:00-24:00.
* Days: ``SUN`` ... ``SAT``, case-insensitive; a span is inclusive and may
  wrap: ``FRI-MON`` is Fri, Sat, Sun, Mon; ``MON-MON`` is Monday.
* ``,`` separates values in either part; blanks around ``,`` and ``-`` are
  ignored.  Anything else is a :class:`UsageError` naming the text.
* Time is the wall clock of the datetime given (the host's zone, or
  ``fleet.timezone``).  In a repeated hour (DST fall-back) both occurrences
  belong to the same slot; a boundary inside a skipped hour (spring-forward)
  happens at the first real instant after it.

This module is pure: no clock, no I/O, no timers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from fleet.core.errors import UsageError

__all__ = ["HELP", "WEEK", "Schedule", "make_schedule", "parse_specs"]

Slot = tuple[int, int]
WEEK = 7 * 24
DAYS = {"MON": 0, "TUE": 1, "WED": 2, "THU": 3, "FRI": 4, "SAT": 5, "SUN": 6}
_DAY_LIST = "SUN MON TUE WED THU FRI SAT"
_EXAMPLE = "e.g. '8-20 MON-FRI' or '20-00,00-08 SUN'"
_HOUR = re.compile(r"\d{1,2}")
_BLANKS_AROUND = re.compile(r"\s*([,-])\s*")

HELP = """\
Working hours, as "<hours> <days>" (repeat the option for several specs; they combine).
hours: HH-HH (end exclusive; 00 or 24 as an end means midnight) or HH alone
(from that hour to midnight); days: SUN..SAT, case-insensitive, one day or a
span SUN-TUE. Separate values with ','. Time is the host's local time
(fleet.timezone overrides).
Spans that wrap mean what you expect: '22-02 FRI' is Friday 22:00 to Saturday
02:00 (hours belong to the day they start on); 'FRI-MON' is Fri, Sat, Sun, Mon.
Examples: '8-20 MON-FRI'; '20 SUN' (Sunday 20:00 to midnight);
'20-00,00-08 SUN' (Sunday 00:00-08:00 and 20:00-24:00).
--uptime: pull tasks only then. --downtime: pull tasks except then. Not both.
Running tasks are never stopped by a schedule."""


def _refuse(field: str, spec: str, why: str) -> UsageError:
    return UsageError(f"{field} {spec!r}: {why}", field=field)


def _hour(text: str, field: str, spec: str, *, end: bool) -> int:
    if not _HOUR.fullmatch(text):
        raise _bad_hour(text, field, spec)
    value = int(text)
    if end and value <= 24:
        return 24 if value == 0 else value
    if not end and value <= 23:
        return value
    where = "an end" if end else "a start"
    raise _refuse(
        field, spec, f"hour {text!r} is out of range as {where}; hours are 00-23 (00 or 24 as an end means midnight)"
    )


def _bad_hour(text: str, field: str, spec: str) -> UsageError:
    return _refuse(field, spec, f"{text!r} is not an hour 00-23 or a span HH-HH; expected {_EXAMPLE}")


def _hours(part: str, field: str, spec: str) -> list[tuple[int, int]]:
    """``(day offset, hour)`` pairs for the hours part, offset 1 = the next day."""
    out: list[tuple[int, int]] = []
    for item in part.split(","):
        if not item:
            raise _refuse(field, spec, f"empty value in hours {part!r}")
        ends = item.split("-")
        if len(ends) == 1:
            start, stop = _hour(ends[0], field, spec, end=False), 24
        elif len(ends) == 2 and ends[0] and ends[1]:
            start, stop = _hour(ends[0], field, spec, end=False), _hour(ends[1], field, spec, end=True)
            if int(ends[0]) == int(ends[1]):
                raise _refuse(
                    field, spec, f"hours {item!r} have equal ends (empty or a whole day?); for a whole day write 00-24"
                )
        else:
            raise _bad_hour(item, field, spec)
        if start < stop:
            out.extend((0, h) for h in range(start, stop))
        else:  # wraps past midnight into the next day
            out.extend((0, h) for h in range(start, 24))
            out.extend((1, h) for h in range(stop))
    return out


def _day(text: str, field: str, spec: str) -> int:
    day = DAYS.get(text.upper())
    if day is None:
        raise _refuse(field, spec, f"day {text!r} is not one of {_DAY_LIST}; expected {_EXAMPLE}")
    return day


def _days(part: str, field: str, spec: str) -> set[int]:
    out: set[int] = set()
    for item in part.split(","):
        if not item:
            raise _refuse(field, spec, f"empty value in days {part!r}")
        ends = item.split("-")
        if len(ends) == 1:
            out.add(_day(ends[0], field, spec))
        elif len(ends) == 2 and ends[0] and ends[1]:
            first, last = _day(ends[0], field, spec), _day(ends[1], field, spec)
            out.update((first + i) % 7 for i in range((last - first) % 7 + 1))
        else:
            raise _refuse(field, spec, f"{item!r} is not a day or a span like SUN-TUE")
    return out


def _parse_one(spec: str, field: str) -> set[Slot]:
    parts = _BLANKS_AROUND.sub(r"\1", spec.strip()).split()
    if not parts:
        raise _refuse(field, spec, f"empty spec; expected '<hours> <days>', {_EXAMPLE}")
    if len(parts) == 1:
        missing = "hours" if parts[0][:1].isalpha() else "days"
        raise _refuse(field, spec, f"missing {missing}; expected '<hours> <days>', {_EXAMPLE}")
    if len(parts) > 2:
        extra = " ".join(parts[2:])
        raise _refuse(field, spec, f"unexpected {extra!r} after the days; separate values with ',' ({_EXAMPLE})")
    hours = _hours(parts[0], field, spec)
    days = _days(parts[1], field, spec)
    return {((day + offset) % 7, hour) for day in days for offset, hour in hours}


def parse_specs(specs: Sequence[str], field: str) -> frozenset[Slot]:
    """The union of the slots of ``specs``; a bad spec raises :class:`UsageError`."""
    slots: set[Slot] = set()
    for spec in specs:
        slots |= _parse_one(spec, field)
    return frozenset(slots)


@dataclass(frozen=True)
class Schedule:
    """An uptime or a downtime: the slots, and the specs they came from."""

    kind: Literal["uptime", "downtime"]
    specs: tuple[str, ...]
    slots: frozenset[Slot]

    def working(self, when: datetime) -> bool:
        """Whether a worker may pull at ``when`` (judged by its wall clock)."""
        inside = (when.weekday(), when.hour) in self.slots
        return inside if self.kind == "uptime" else not inside

    def next_change(self, after: datetime) -> datetime | None:
        """The first instant strictly after ``after`` at which :meth:`working`
        flips, in ``after``'s zone; None if it never does.

        Candidates are the instants of the wall-clock hour boundaries (both
        folds of each, normalised through UTC, so a boundary in a skipped hour
        lands on the first real instant after it); the state at each is judged
        by the real wall clock there, so a slot that a DST jump skips is not
        reported as two changes at one instant.
        """
        tz = after.tzinfo
        if tz is None or after.utcoffset() is None:
            raise ValueError("next_change needs an aware datetime")
        if not 0 < len(self.slots) < WEEK:
            return None
        now = self.working(after)
        start = after.replace(minute=0, second=0, microsecond=0, tzinfo=None, fold=0)
        after_utc = after.astimezone(timezone.utc)
        candidates: set[datetime] = set()
        for step in range(WEEK + 48):  # a week of wall clock, plus room for DST
            wall = start + timedelta(hours=step)
            for fold in (0, 1):
                instant = wall.replace(tzinfo=tz, fold=fold).astimezone(timezone.utc)
                if instant > after_utc:
                    candidates.add(instant)
        for instant in sorted(candidates):
            local = instant.astimezone(tz)
            if self.working(local) != now:
                return local
        return None  # pragma: no cover - a non-trivial weekly set always flips


def make_schedule(uptime: Sequence[str], downtime: Sequence[str], field_prefix: str = "--") -> Schedule | None:
    """The schedule given by ``uptime`` or ``downtime`` (never both); None for neither.

    ``field_prefix`` names the source in messages: ``"--"`` for the command
    line (``--uptime``), ``"agent."`` for the config (``agent.uptime``).
    """
    up, down = f"{field_prefix}uptime", f"{field_prefix}downtime"
    if uptime and downtime:
        raise UsageError(
            f"{up} and {down} exclude each other; give one (uptime {list(uptime)!r}, downtime {list(downtime)!r})",
            field=up,
        )
    if uptime:
        return Schedule("uptime", tuple(uptime), parse_specs(uptime, up))
    if downtime:
        return Schedule("downtime", tuple(downtime), parse_specs(downtime, down))
    return None
