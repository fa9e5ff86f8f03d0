"""Who is calling the API, and may they.

The model (README, "Security model"):

- Over the unix socket ``$FLEET_HOME/api.sock`` the kernel names the caller
  (``SO_PEERCRED``, put in the request's scope by :mod:`fleet.api.peer`): the
  manager's own user, root and the members of ``fleet.api.group`` are let in,
  as themselves; anyone else gets 403 (the socket's mode already keeps them out).
- Over TCP (loopback included) every route needs a credential: the API token
  (``Authorization: Bearer``; its holder acts as the manager's user), the
  page's session cookie (got with a one-time login code, acting as whoever
  minted the code) or, on the ClearML-compatible routes, ``key:secret`` basic
  auth.  Only a minimal health, the login route and the page's static files
  are open.
- A credential that is sent is checked even where none is needed: a wrong
  token is a 401 over the socket too, never silently ignored.
"""

from __future__ import annotations

import base64
import binascii
import grp
import hmac
import os
import pwd
import secrets
import threading
import time
from dataclasses import dataclass

from fleet.core.errors import ConfigError, Forbidden, Unauthorized
from fleet.core.home import Home

LOGIN_CODE_S = 120.0  # a one-time login code is good this long
SESSION_S = 12 * 3600.0  # and the page's cookie this long
MAX_PENDING = 256  # outstanding codes / sessions kept; the oldest go first
_MIN_TOKEN = 16


@dataclass(frozen=True)
class Caller:
    """The authenticated user behind a request: ``user`` is the OS user name
    recorded as a task's submitter; ``admin`` is the manager's user or root."""

    user: str
    uid: int
    via: str  # "socket", "token", "session" or "basic"
    admin: bool


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_id(name: str) -> int | None:
    """The gid of ``fleet.api.group``; None when none is set."""
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"fleet.api.group {name!r}: no such group on this host", field="fleet.api.group") from None


def in_group(uid: int, gid: int) -> bool:
    """``uid``'s primary group is ``gid``, or the group lists it as a member."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return False
    if entry.pw_gid == gid:
        return True
    try:
        return entry.pw_name in grp.getgrgid(gid).gr_mem
    except KeyError:
        return False


def ensure_token(home: Home, configured: str, gid: int | None) -> str:
    """The token in effect, written to ``api.token`` (0600; 0640 and owned by
    ``gid`` when given): ``configured`` when set, else the one kept from an
    earlier start, else a new random one."""
    token = configured or home.read_api_token()
    if len(token) < _MIN_TOKEN and not configured:
        token = secrets.token_urlsafe(32)
    tmp = home.api_token.with_name("api.token.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if gid is not None:
            os.fchown(fd, -1, gid)
            os.fchmod(fd, 0o640)
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, home.api_token)
    return token


def share_home(home: Home, gid: int | None) -> None:
    """With ``fleet.api.group``, the home's own folder becomes 0750 and owned by the
    group (so its members reach the socket; everything inside stays owner-only).
    Without one it is left as it is (one writable by others is tightened: Home.tighten);
    the socket and token file, 0600, then keep everyone else out."""
    if gid is not None:
        os.chown(home.root, -1, gid)
        os.chmod(home.root, 0o750)


def basic_matches(header: str, key: str, secret: str) -> bool:
    """``Authorization: Basic base64(key:secret)`` (ClearML's ``curl --user``),
    compared in constant time; False when no credentials are configured."""
    if not (key and secret) or not header[:6].lower() == "basic ":
        return False
    try:
        given = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, f"{key}:{secret}".encode())


class Access:
    """The manager's rules for callers, and the page's login codes and sessions
    (in memory: a restarted manager asks the page to log in again)."""

    def __init__(self, token: str, gid: int | None) -> None:
        self.token = token
        self.gid = gid
        uid = os.geteuid()
        self.owner = Caller(user_name(uid), uid, "token", True)
        # Browsers keep cookies per host, not per port: each manager on the host names its own.
        self.cookie = "fleet_session"
        self._lock = threading.Lock()
        self._codes: dict[str, tuple[float, Caller]] = {}
        self._sessions: dict[str, tuple[float, Caller]] = {}

    def is_admin(self, uid: int) -> bool:
        return uid in (0, self.owner.uid)

    def from_peer(self, uid: int) -> Caller:
        """The caller on the other end of the unix socket, or ``Forbidden``."""
        if self.is_admin(uid):
            return Caller(user_name(uid), uid, "socket", True)
        if self.gid is not None and in_group(uid, self.gid):
            return Caller(user_name(uid), uid, "socket", False)
        allowed = " and ".join(sorted({self.owner.user, "root"}))
        if self.gid is not None:
            allowed += f" and members of group {grp.getgrgid(self.gid).gr_name}"
        raise Forbidden(f"user {user_name(uid)} may not use this fleet: only {allowed} may (fleet.api.group)")

    def token_matches(self, header: str) -> bool:
        return hmac.compare_digest(header.encode(), f"Bearer {self.token}".encode())

    # -- the page's login ------------------------------------------------------------
    def mint_code(self, caller: Caller) -> str:
        """A one-time code that logs the page in as ``caller``, for LOGIN_CODE_S."""
        code = secrets.token_urlsafe(24)
        with self._lock:
            _prune(self._codes)
            self._codes[code] = (time.monotonic() + LOGIN_CODE_S, caller)
        return code

    def redeem(self, code: str) -> tuple[str, Caller]:
        """Use a code (once): a new session id and who it is for."""
        with self._lock:
            entry = self._codes.pop(code, None)
            if entry is None or entry[0] < time.monotonic():
                raise Unauthorized("this login code is wrong, used or expired: run fleetctl page for a new one")
            _prune(self._sessions)
            session = secrets.token_urlsafe(32)
            caller = Caller(entry[1].user, entry[1].uid, "session", entry[1].admin)
            self._sessions[session] = (time.monotonic() + SESSION_S, caller)
        return session, caller

    def from_session(self, session: str) -> Caller | None:
        with self._lock:
            entry = self._sessions.get(session)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def end_session(self, session: str) -> None:
        with self._lock:
            self._sessions.pop(session, None)


def _prune(entries: dict[str, tuple[float, Caller]]) -> None:
    now = time.monotonic()
    for key in [k for k, (until, _) in entries.items() if until < now]:
        del entries[key]
    while len(entries) >= MAX_PENDING:
        del entries[next(iter(entries))]
