"""The PostgreSQL store's URL, shown without its secrets, and its faults.

The URL (``postgresql://user:password@host:port/db?sslmode=...``) may hold a
password, and its query may name an ``sslpassword``; libpq may also take one
from ``PGPASSWORD`` or ``~/.pgpass``.  fleet shows the URL only as
:attr:`StoreUrl.shown` (the password and every secret parameter masked with
:data:`fleet.core.secrets.MASK`), and every message of the driver that fleet
passes on (logs, errors, the API's 503) goes through :meth:`StoreUrl.scrub`
first, which also replaces the known secret values wherever they appear.

Faults: a server that cannot be reached or went away, a connection pool
that gives none in time, a full disk on the server, a read-only standby, a
deadlock, a cancelled statement or a transaction the server ended (this
process was frozen in it past ``idle_in_transaction_session_timeout``) are
passing states:
:class:`~fleet.errors.StoreUnavailable` (503 at the API, back-off in the
loops), exactly like SQLite's (:mod:`fleet.store.faults`).  Refused
credentials or a database that does not exist are not: they are a
:class:`~fleet.errors.StoreError` naming the cause, so a wrong config fails
at start instead of retrying for ever.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import psycopg
from psycopg import errors as pgerr
from psycopg.conninfo import conninfo_to_dict

from fleet.core.config import masked_url
from fleet.core.errors import StoreError, StoreUnavailable
from fleet.core.secrets import MASK, MIN_SCRUBBED, mask_urls
from fleet.store.faults import DISK_FULL, READ_ONLY

UNREACHABLE = "database server unreachable"
LOCKED = "database is locked"
BUSY = "database is busy"
ENDED = "transaction ended by the server"
SCHEMES = ("postgresql", "postgres")
# connection parameters whose values are secret (libpq's names)
SECRET_PARAMS = frozenset({"password", "sslpassword"})


@dataclass(frozen=True)
class StoreUrl:
    """A PostgreSQL URL: what libpq gets, and what people see."""

    conninfo: str = field(repr=False)
    shown: str
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def parse(cls, url: str) -> StoreUrl:
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES or not (parts.hostname or parts.path.strip("/") or parts.query):
            raise StoreError(f"store URL {masked_url(url)!r}: expected postgresql://[user[:password]@]host[:port]/db")
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise StoreError(f"store URL {masked_url(url)!r}: {_scrub(str(exc), _secret_values(url))}") from None
        secrets = tuple(str(params[k]) for k in SECRET_PARAMS if params.get(k))
        env_password = os.environ.get("PGPASSWORD", "")
        if env_password:
            secrets += (env_password,)
        return cls(url, masked_url(url), secrets)

    def scrub(self, text: str) -> str:
        """``text`` with every secret of this URL masked."""
        return _scrub(text, self.secrets)

    def __str__(self) -> str:
        return self.shown


def _secret_values(url: str) -> tuple[str, ...]:
    parts = urlsplit(url)
    found = [parts.password or ""] + [v for k, v in parse_qsl(parts.query) if k in SECRET_PARAMS]
    return tuple(v for v in found if v)


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    """Known secret values masked wherever they appear (too short ones only
    inside URLs, as :mod:`fleet.core.secrets` does with free text)."""
    for value in sorted(secrets, key=len, reverse=True):
        if len(value) >= MIN_SCRUBBED:
            text = text.replace(value, MASK)
    return mask_urls(text)


def unavailable(exc: BaseException, url: StoreUrl) -> StoreUnavailable | None:
    """The :class:`StoreUnavailable` that a driver error means, or None (a bug, or a refusal)."""
    if not isinstance(exc, psycopg.Error):
        return None
    detail = url.scrub(" ".join(str(exc).split()))[:300]
    if isinstance(exc, pgerr.DiskFull):
        return StoreUnavailable(DISK_FULL, detail)
    if isinstance(exc, pgerr.ReadOnlySqlTransaction):
        return StoreUnavailable(READ_ONLY, detail)
    if isinstance(exc, (pgerr.DeadlockDetected, pgerr.SerializationFailure, pgerr.LockNotAvailable)):
        return StoreUnavailable(LOCKED, detail)
    if isinstance(exc, pgerr.QueryCanceled):
        return StoreUnavailable(BUSY, detail)
    if isinstance(exc, pgerr.IdleInTransactionSessionTimeout):  # this process was frozen mid-transaction
        return StoreUnavailable(ENDED, detail)
    if refusal(exc, url) is not None:
        return None
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return StoreUnavailable(UNREACHABLE, detail)
    return None


def refusal(exc: BaseException, url: StoreUrl) -> StoreError | None:
    """A :class:`StoreError` when the server refused this fleet (credentials, database, role)."""
    if not isinstance(exc, psycopg.Error):
        return None
    state = exc.sqlstate or ""
    text = str(exc)
    missing = "does not exist" in text and ('database "' in text or 'role "' in text)
    refused = state.startswith("28") or state == "3D000" or "authentication failed" in text or missing
    if not refused:
        return None
    return StoreError(f"store {url.shown}: the server refused the connection: {url.scrub(' '.join(text.split()))}")
