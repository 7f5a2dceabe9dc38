"""Pure ASGI guards: request body size (413) and type (415), a deadline per request
(503), and cross-origin access for the browser origins configured (CORS)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from healthcomp.core.errors import error_body


async def send_error(
    send: Send, status: int, error: str, message: str, headers: dict[str, str]
) -> None:
    """The SPEC §4 envelope, sent from below the framework."""
    body = error_body(status, error, message)
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# In a request's scope while its body is still arriving (set and cleared by BodyLimit).
BODY_PENDING = "healthcomp.body_pending"


class _TrackedSend:
    """Wraps `send` and remembers whether the response has started: a guard may only
    answer with its own error before that."""

    __slots__ = ("send", "started")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class _TooLarge(HTTPException):
    """Raised from `receive`; FastAPI lets an HTTPException through body parsing."""

    def __init__(self) -> None:
        super().__init__(413, "The request body is too large.")


def is_json(content_type: bytes) -> bool:
    """`application/json` or a `+json` type, whatever its parameters (charset)."""
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


class BodyLimit:
    """Bodies of at most `max_bytes` (413), and on the API only JSON ones (415): a body
    sent without its JSON content type (curl's `-d` says form data) is refused with a
    sentence that says so, not parsed into a confusing validation error."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Send) -> None:
        message = f"The request body exceeds {self.max_bytes} bytes."
        await send_error(send, 413, "payload_too_large", message, {"connection": "close"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared, content_type, chunked = 0, None, False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._reject(send)
                    return
            elif name == b"content-type":
                content_type = value
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        if (
            (declared > 0 or chunked)
            and (content_type is None or not is_json(content_type))
            and scope["path"].startswith("/api/")
        ):
            sent = (
                "no Content-Type" if content_type is None else f"'{content_type.decode('latin-1')}'"
            )
            await send_error(
                send,
                415,
                "unsupported_media_type",
                f"Send the body as JSON with 'Content-Type: application/json' (this request "
                f"has {sent}).",
                {},
            )
            return
        seen = 0
        if declared > 0 or chunked:
            scope[BODY_PENDING] = True  # until its last part arrives (for Deadline's 408)

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
                if not message.get("more_body", False):
                    scope.pop(BODY_PENDING, None)
            return message

        tracked = _TrackedSend(send)
        try:
            await self.app(scope, counting_receive, tracked)
        except _TooLarge:
            if not tracked.started:
                await self._reject(send)


class Deadline:
    """Answer 503 when a request takes longer than `seconds` (a hung datastore), or 408
    when it is the client that has not sent its whole body by then (a slow client).

    Redis socket timeouts bound one command; this bounds the whole request, whatever
    the number of commands or reconnects inside it. `/health` is exempt: it touches
    nothing and must answer even then.

    One watchdog per worker instead of a timer per request: requests note when they
    are due, and a check a few times a second cancels those past it (a request is
    answered within `seconds` plus one tick). A timer per request (`asyncio.timeout`)
    cost a tenth of a sync's CPU.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds
        self.tick = min(0.25, seconds / 10)
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._watch: asyncio.TimerHandle | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        self._due[task] = loop.time() + self.seconds
        if self._watch is None:
            self._watch = loop.call_later(self.tick, self._check, loop)
        tracked = _TrackedSend(send)
        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if task not in self._expired or tracked.started:
                raise
            task.uncancel()
            if scope.get(BODY_PENDING):
                message = f"The request body did not arrive within {self.seconds:g} seconds."
                await send_error(send, 408, "request_timeout", message, {"connection": "close"})
                return
            message = (
                "The request took too long; the datastore may be unavailable. Try again shortly."
            )
            await send_error(send, 503, "service_unavailable", message, {"retry-after": "2"})
        finally:
            self._due.pop(task, None)
            self._expired.discard(task)

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, due in list(self._due.items()):
            if due <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._watch = loop.call_later(self.tick, self._check, loop) if self._due else None


class Cors:
    """Cross-origin access for the configured browser origins (`HC_CORS_ORIGINS`).

    Only installed when origins are configured: by default no CORS header is ever sent,
    and a browser page on another site cannot read any answer. Tokens travel in the
    `Authorization` header, never in cookies, so credentials are not allowed and `*`
    is safe to answer for "any origin".

    A preflight (`OPTIONS` with `Access-Control-Request-Method`) from an allowed origin is
    answered 204 here, before authentication (browsers send no token with it); from
    another origin, 403 in the SPEC §4 envelope. Other requests pass through, and the
    answer to an allowed origin carries `Access-Control-Allow-Origin`.
    """

    METHODS = b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
    HEADERS = b"authorization, content-type, x-request-id"
    EXPOSE = b"retry-after, x-request-id"
    MAX_AGE = b"600"

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.any = "*" in origins
        self.origins = frozenset(origin.encode("latin-1") for origin in origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = preflight = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                preflight = value
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = self.any or origin in self.origins
        if preflight is not None and scope["method"] == "OPTIONS":
            await self._preflight(send, origin, allowed)
            return
        if not allowed:
            await self.app(scope, receive, send)
            return
        granted = b"*" if self.any else origin

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers += [
                    (b"access-control-allow-origin", granted),
                    (b"access-control-expose-headers", self.EXPOSE),
                    (b"vary", b"Origin"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_cors)

    async def _preflight(self, send: Send, origin: bytes, allowed: bool) -> None:
        if not allowed:
            shown = origin.decode("latin-1")[:200]
            message = f"Cross-origin requests from {shown} are not allowed (HC_CORS_ORIGINS)."
            await send_error(send, 403, "origin_not_allowed", message, {"vary": "Origin"})
            return
        headers = [
            (b"access-control-allow-origin", b"*" if self.any else origin),
            (b"access-control-allow-methods", self.METHODS),
            (b"access-control-allow-headers", self.HEADERS),
            (b"access-control-max-age", self.MAX_AGE),
            (b"vary", b"Origin"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
