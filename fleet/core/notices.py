"""Notices: how a change committed on one host reaches the managers of the others.

On one host a worker hears of new work from a datagram (:mod:`fleet.core.wakeups`).
A worker on another host of a fleet on PostgreSQL has no socket here, so the
service also *announces* the change through the store
(:meth:`fleet.store.interface.Store.announce`: ``NOTIFY`` on :data:`CHANNEL`)
and each manager's listener (:mod:`fleet.manager.notices`) passes on to its
own host's workers what is addressed to them, by the same datagram.

A notice is one of two kinds:

- ``wake``: the workers ``workers`` of host ``host`` have something to do (a
  task in their queue, an abort, a stop); ``everyone`` instead of a list when
  the ids would not fit one notice.
- ``schedule``: a runtime property (``force``) or a queue's tags changed: every
  manager recomputes its workers' effective states now.

``origin`` is the host that sent it, so its own listener skips what it has
already done.  A notice travels as compact JSON; PostgreSQL takes at most
8000 bytes a payload, so a long list of ids is split over several notices of
at most :data:`PAYLOAD_MAX` bytes (:func:`wake_notices`).  Correctness never
rests on a notice: a lost one costs the worker's fallback poll
(``fleet.poll_interval``), as a lost datagram does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from enum import Enum

log = logging.getLogger(__name__)

CHANNEL = "fleet"  # the one NOTIFY channel of a fleet's database
PAYLOAD_MAX = 7900  # bytes of one payload; PostgreSQL's limit is 8000


class NoticeKind(str, Enum):
    WAKE = "wake"
    SCHEDULE = "schedule"


@dataclass(frozen=True)
class Notice:
    kind: NoticeKind
    origin: str  # the host that sent it
    host: str = ""  # wake: the host whose workers are meant
    workers: tuple[str, ...] = ()  # wake: their ids
    everyone: bool = False  # wake: every worker of ``host`` (the ids did not fit)

    def encode(self) -> str:
        data: dict[str, object] = {"k": self.kind.value, "o": self.origin}
        if self.kind == NoticeKind.WAKE:
            data["h"] = self.host
            if self.everyone:
                data["all"] = True
            else:
                data["w"] = list(self.workers)
        return json.dumps(data, separators=(",", ":"))


def schedule_notice(origin: str) -> Notice:
    return Notice(NoticeKind.SCHEDULE, origin)


def wake_notices(origin: str, host: str, worker_ids: list[str]) -> list[Notice]:
    """Notices that wake ``worker_ids`` of ``host``, each under :data:`PAYLOAD_MAX`
    bytes; a single id too long for one is replaced by waking all of ``host``."""
    empty = len(Notice(NoticeKind.WAKE, origin, host).encode())
    notices: list[Notice] = []
    chunk: list[str] = []
    size = empty
    for wid in worker_ids:
        cost = len(json.dumps(wid)) + 1  # the id and a comma
        if empty + cost > PAYLOAD_MAX:
            return [Notice(NoticeKind.WAKE, origin, host, everyone=True)]
        if size + cost > PAYLOAD_MAX:
            notices.append(Notice(NoticeKind.WAKE, origin, host, tuple(chunk)))
            chunk, size = [], empty
        chunk.append(wid)
        size += cost
    if chunk:
        notices.append(Notice(NoticeKind.WAKE, origin, host, tuple(chunk)))
    return notices


def decode(payload: str) -> Notice | None:
    """The notice in ``payload``; None (logged) for one this version cannot read."""
    try:
        data = json.loads(payload)
        kind = NoticeKind(data["k"])
        origin = str(data["o"])
        if kind == NoticeKind.SCHEDULE:
            return Notice(kind, origin)
        workers = data.get("w", [])
        if not isinstance(workers, list):
            raise TypeError("w is not a list")
        return Notice(kind, origin, str(data["h"]), tuple(str(w) for w in workers), bool(data.get("all", False)))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("notice %.200r: cannot read it (%s); ignored", payload, exc)
        return None
