"""What is secret, and how it is masked: the one place for both.

A value is secret by its **name** or by its **value**:

* names (case-insensitive) containing ``PASS`` (so ``*PASSWORD``,
  ``PASSWD``), ``SECRET``, ``CREDENTIAL``, ``PRIVATE``, ``API_KEY`` /
  ``APIKEY``, ``ACCESS_KEY``, or ``TOKEN`` not followed by a letter
  (``*_TOKEN``, ``HF_*TOKEN``, ``GH_TOKEN_FILE`` — but not
  ``TOKENIZERS_PARALLELISM``); names ending in ``_KEY`` or ``_AUTH`` (or
  ``KEY`` / ``AUTH`` alone); ``DATABASE_URL``; ClearML Agent's always-hidden
  names; and the configured ``agent.hide_docker_command_env_vars.extra_keys``
  (exact names);
* any value holding a URL with credentials: ``scheme://user:password@host``
  shows as ``scheme://user:********@host``, and an http(s) URL's lone user (a
  token, as GitHub's ``https://ghp_x@github.com``) as ``https://********@``,
  whatever the variable is called.

A secret name masks the whole value (``********``); a secret URL masks only
its password, so a person still sees where it points.  Masked values are
what the API, ``fleetctl show``, the page, logs and printed ``docker run``
lines show; tasks and containers always get the real values.  A clone whose
edited environment still carries a masked value keeps the real one
(:func:`unmask_env`), so the page can clone with an edited environment
without ever seeing a secret.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlsplit

MASK = "********"

# Always hidden: ClearML Agent's list plus ours (the name rules cover them too;
# they are listed so that no change of the rules can ever show them).
ALWAYS_HIDDEN = frozenset(
    {
        "CLEARML_API_SECRET_KEY",
        "CLEARML_AGENT_GIT_PASS",
        "AWS_SECRET_ACCESS_KEY",
        "AZURE_STORAGE_KEY",
        "FLEET_API_TOKEN",
        "FLEET_GIT_PASS",
        "DATABASE_URL",
    }
)
_SECRET_NAME = re.compile(
    r"PASS|SECRET|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY|TOKEN(?![A-Z])|(?:^|_)(?:KEY|AUTH)$", re.IGNORECASE
)
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^/@\s:]*)(?::(?P<pw>[^/\s]*))?@")
_WEB = ("http", "https")
MIN_SCRUBBED = 4  # known secret values shorter than this are not replaced inside free text


def is_secret_name(name: str, extra_keys: Iterable[str] = ()) -> bool:
    return name in ALWAYS_HIDDEN or name in frozenset(extra_keys) or bool(_SECRET_NAME.search(name))


def mask_urls(text: str) -> str:
    """``postgres://u:pw@host/db`` -> ``postgres://u:********@host/db``; a lone
    http(s) user (often a token) -> ``https://********@host``.  ssh users are kept."""
    return _USERINFO.sub(_mask_userinfo, text)


def _mask_userinfo(m: re.Match[str]) -> str:
    scheme, user, pw = m.group("scheme"), m.group("user"), m.group("pw")
    if pw is not None:
        return f"{scheme}{user}:{MASK}@"
    if scheme.lower().rstrip(":/") in _WEB:
        return f"{scheme}{MASK}@"
    return m.group(0)


def strip_credentials(url: str) -> str:
    """An http(s) URL without its ``user:password@``; other URLs unchanged
    (what a task records as its repository, and git's ``origin``)."""
    return split_credentials(url)[0]


def split_credentials(url: str) -> tuple[str, str, str]:
    """``(url without userinfo, user, password)`` for http(s); else ``(url, "", "")``."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in _WEB or "@" not in parts.netloc:
        return url, "", ""
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return parts._replace(netloc=hostport).geturl(), user, password


def mask_value(name: str, value: str, extra_keys: Iterable[str] = ()) -> str:
    return MASK if is_secret_name(name, extra_keys) else mask_urls(value)


def is_secret(name: str, value: str, extra_keys: Iterable[str] = ()) -> bool:
    """Secret by its name, or by a URL with credentials in its value."""
    return mask_value(name, value, extra_keys) != value


def mask_env(env: Mapping[str, str], extra_keys: Iterable[str] = ()) -> dict[str, str]:
    extra = frozenset(extra_keys)
    return {k: mask_value(k, v, extra) for k, v in env.items()}


def unmask_env(edited: Mapping[str, str], source: Mapping[str, str], extra_keys: Iterable[str] = ()) -> dict[str, str]:
    """An environment edited from a masked one: a value still shown as the
    source showed it (``********``, or a URL with its password masked) keeps
    the source's real value; anything typed anew is taken as typed."""
    extra = frozenset(extra_keys)
    out: dict[str, str] = {}
    for key, value in edited.items():
        real = source.get(key)
        keep = real is not None and (value == MASK or value == mask_value(key, real, extra))
        out[key] = real if keep and real is not None else value
    return out


def secret_values(env: Mapping[str, str], extra_keys: Iterable[str] = (), also: Iterable[str] = ()) -> list[str]:
    """The values of ``env``'s secret names, plus ``also`` (a git password, a token):
    what :func:`mask_text` replaces wherever it appears."""
    extra = frozenset(extra_keys)
    found = [v for k, v in env.items() if v and is_secret_name(k, extra)]
    return found + [v for v in also if v]


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Free text (a log line, an error): URLs' credentials masked, and every
    known secret value (of :data:`MIN_SCRUBBED` characters or more) replaced."""
    for value in sorted({v for v in secrets if len(v) >= MIN_SCRUBBED}, key=len, reverse=True):
        text = text.replace(value, MASK)
    return mask_urls(text)


def mask_args(argv: Sequence[str], extra_keys: Iterable[str] = (), secret_values: Iterable[str] = ()) -> list[str]:
    """``docker run`` arguments for display: the value of ``-e KEY=value`` (also
    ``--env KEY=value``, ``--env=KEY=value``, ``-eKEY=value``) masked as
    :func:`mask_value` does, and every argument passed through :func:`mask_text`."""
    extra = frozenset(extra_keys)
    values = list(secret_values)
    out: list[str] = []
    for i, arg in enumerate(argv):
        text = _mask_setting(arg, extra) if i > 0 and argv[i - 1] in ("-e", "--env") else arg
        for flag in ("--env=", "-e"):
            if arg.startswith(flag) and len(arg) > len(flag) and arg not in ("-e", "--env"):
                text = flag + _mask_setting(arg[len(flag) :], extra)
                break
        out.append(mask_text(text, values))
    return out


def _mask_setting(text: str, extra: frozenset[str]) -> str:
    key, eq, value = text.partition("=")
    return f"{key}={mask_value(key, value, extra)}" if eq else text


def mask_command(argv: Sequence[str], extra_keys: Iterable[str] = (), secret_values: Iterable[str] = ()) -> str:
    """:func:`mask_args`, joined as a shell would read it."""
    return shlex.join(mask_args(argv, extra_keys, secret_values))
