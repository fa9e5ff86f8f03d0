"""Pure ASGI middleware that keeps requests from hurting the manager.

:class:`BodyGuard` refuses a request body above ``fleet.api.max_body_mb``
with 413 before reading it whole (a ``Content-Length`` above the limit is
refused unread; a chunked body is counted as it arrives), and a body nested
deeper than :data:`~fleet.api.bounds.MAX_JSON_DEPTH` with 422, before any
JSON parser recurses into it.

:class:`CatchAll` turns an exception no handler expected into a JSON 500 on
the same connection.  Starlette's own last resort (``ServerErrorMiddleware``)
answers and then re-raises, and uvicorn then drops the connection, so a
keep-alive client's next request failed too; this one answers and returns.
"""

from __future__ import annotations

import json
import logging
import re
from itertools import accumulate

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleet.api.bounds import MAX_JSON_DEPTH
from fleet.core.errors import FleetError, PayloadTooLarge, UsageError

log = logging.getLogger(__name__)

# A JSON string, through its closing quote (or the end of an unterminated one);
# possessive, so a match never backtracks and the scan stays linear.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
for _opener in b"[{":
    _STEP[_opener] = 1
for _closer in b"]}":
    _STEP[_closer] = -1


def too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``body`` (JSON text) nests arrays and objects deeper than ``limit``.

    Brackets inside strings are text.  Done by C loops (a regex drops the
    strings, ``translate`` keeps the brackets, a running sum finds the
    deepest point), so a 2 MB body of brackets costs milliseconds, not the
    event loop's time; a body with no more opening brackets than ``limit`` is
    not scanned at all."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= limit:
        return False
    return max(accumulate(map(_STEP.__getitem__, brackets))) > limit


async def _answer(send: Send, error: FleetError, *, close: bool = False) -> None:
    headers = [(b"content-type", b"application/json")]
    if close:  # the rest of the body is not read: the connection cannot carry another request
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(error.to_json()).encode()})


class BodyGuard:
    """Bounds a request body's size (``max_bytes``) and its JSON nesting."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_mb: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_mb = max_mb

    def _too_large(self, declared: str | None) -> PayloadTooLarge:
        """``declared``: the Content-Length; None for a chunked body (counted as it came)."""
        size = f"{declared} bytes, " if declared is not None else ""
        return PayloadTooLarge(
            f"body: {size}above the limit of {self.max_bytes} bytes (fleet.api.max_body_mb = {self.max_mb:g})",
            field="body",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and (len(declared) > 15 or int(declared) > self.max_bytes):
            await _answer(send, self._too_large(declared.decode()), close=True)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _answer(send, self._too_large(None), close=True)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and await run_in_threadpool(too_deep, body):
            error = UsageError(f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels", field="body")
            await _answer(send, error)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class CatchAll:
    """The innermost guard: an unexpected exception is logged and answered as a
    JSON 500, and the connection stays usable."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            log.exception("api: unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if started:  # part of the answer is out (a stream): all that can be done is to end it
                return
            await _answer(send, FleetError(f"internal error: {type(exc).__name__}"))
