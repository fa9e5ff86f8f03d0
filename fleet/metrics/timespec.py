"""Times given by people: ``24h``, ``7d``, ``90m``, ``2026-11-01``, ISO 8601, epoch seconds.

A duration means "that long before now".  A date without a zone is the
host's local time; ``Z`` or an offset is honoured.
"""

from __future__ import annotations

import datetime as dt
import re

from fleet.core.errors import UsageError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
EXPECTED = "expected a duration like 30m, 24h, 7d, a date like 2026-11-01 or 2026-11-01T08:00, or epoch seconds"
MAX_AGE_S = 10 * 366 * 86400


def duration(text: str, field: str) -> float:
    """``90s``, ``15m``, ``24h``, ``7d``, ``2w`` -> seconds (refuses zero)."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise UsageError(f"{field} {text!r}: expected a duration like 30s, 15m, 24h, 7d", field=field)
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not 0 < seconds <= MAX_AGE_S:
        raise UsageError(f"{field} {text!r}: expected a duration above 0 and at most 10 years", field=field)
    return seconds


def parse_when(text: str, now: float, field: str) -> float:
    """The instant ``text`` names, as epoch seconds."""
    raw = text.strip()
    if _DURATION.match(raw.lower()):
        return now - duration(raw, field)
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if value != value or not 0 <= value <= now + MAX_AGE_S:  # NaN, negative, absurd
            raise UsageError(f"{field} {text!r}: {EXPECTED}", field=field)
        return value
    try:
        when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"{field} {text!r}: {EXPECTED}", field=field) from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time
    return when.timestamp()


def window(since: str, until: str | None, now: float, max_s: float = MAX_AGE_S) -> tuple[float, float]:
    """``[since, until)`` with ``until`` defaulting to now; refuses empty or reversed ranges."""
    start = parse_when(since, now, "since")
    end = now if until is None or not until.strip() else parse_when(until, now, "until")
    if end <= start:
        raise UsageError(f"since {since!r} is not before until {until or 'now'!r}", field="since")
    if end - start > max_s:
        raise UsageError(f"since {since!r}: the range is longer than {max_s / 86400:g} days", field="since")
    return start, end


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
