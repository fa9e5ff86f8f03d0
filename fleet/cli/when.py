"""Times for people: local time with the zone shown (fleet's convention).

The API speaks ISO 8601 UTC (``2026-11-25T21:00:02.766Z``); ``--json`` keeps
it.  Tables show local time and name the zone once, in the column header
(``CREATED (CET)``): a time of today as ``21:00:02``, an older one as
``2026-11-25 21:00``.  A time whose zone differs from the header's (the other
side of a daylight-saving change) carries its own (``2026-07-01 21:00 CEST``).
Single values (``show``, ``report``'s window) carry the zone after them.
"""

from __future__ import annotations

import datetime as dt


def _local(iso: str) -> dt.datetime:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()


def zone(now: dt.datetime | None = None) -> str:
    """The local zone's name now (``CET``, ``UTC``)."""
    return (now or dt.datetime.now().astimezone()).strftime("%Z")


def header(name: str, now: dt.datetime | None = None) -> str:
    """``CREATED (CET)``: a time column's header names the zone."""
    return f"{name} ({zone(now)})"


def cell(iso: str | None, now: dt.datetime | None = None) -> str:
    """A time in a table under :func:`header` (see the module docstring)."""
    if not iso:
        return ""
    now = now or dt.datetime.now().astimezone()
    at = _local(iso)
    own = "" if at.strftime("%Z") == zone(now) else f" {at.strftime('%Z')}"
    if at.date() == now.date():
        return at.strftime("%H:%M:%S") + own
    return at.strftime("%Y-%m-%d %H:%M") + own


def full(iso: str | None) -> str:
    """``2026-11-25 22:00:02 CET``: one time on its own, with its zone."""
    return _local(iso).strftime("%Y-%m-%d %H:%M:%S %Z") if iso else ""
