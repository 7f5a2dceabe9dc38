"""The two hottest requests served below the framework: a leaderboard page and a sync;
and the live leaderboard's WebSocket (`healthcomp.live`), which the framework never sees.

FastAPI's routes for them stay: they are what `/openapi.json` and `/docs` describe, and
they answer everything this path does not take. This path takes a request only in the
common, well-formed case: the exact path and method, a bearer token that verifies,
known query parameters with valid values, a JSON body that validates against the very
schema of the route. Anything else goes to the framework untouched (the body replayed),
so every refusal of input reads as it does there; a refusal decided here (403, 404,
429, 503) is the same envelope the framework's handlers give. It runs inside the body
size and deadline guards, and does what the routes do with less: no dependency
resolution, no models for the answer, the body encoded once.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from healthcomp.activity import service as activity
from healthcomp.activity.schemas import Batch, SyncBody
from healthcomp.core import ratelimit
from healthcomp.core.auth import Principal
from healthcomp.core.context import AppContext
from healthcomp.core.errors import known_error_response
from healthcomp.core.keys import valid_id
from healthcomp.core.logs import note_records
from healthcomp.core.metrics import SYNC_PATH
from healthcomp.engine import writes
from healthcomp.leaderboard import service as leaderboard
from healthcomp.live import socket as live

log = logging.getLogger("healthcomp.lean")

BOARD_PREFIX = "/api/v1/leaderboard/"
BOARD_ROUTE = "/api/v1/leaderboard/{competition_id}"
_SYNC_BODY: TypeAdapter[Any] = TypeAdapter(SyncBody)
_JSON = (b"content-type", b"application/json")
_SYNCED_HEAD = b'{"success":true,"data":'
_SYNCED_TAIL = b',"message":"Activity synced."}'
MAX_LIMIT, MAX_OFFSET = 1000, 10_000_000


class Lean:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            method: str = scope["method"]
            if method == "GET" and path.startswith(BOARD_PREFIX):
                scope["healthcomp.route"] = BOARD_ROUTE  # for the access line
                if await self._board(scope, send, path[len(BOARD_PREFIX) :]):
                    return
            elif method == "POST" and path == SYNC_PATH:
                scope["healthcomp.route"] = SYNC_PATH
                await self._sync(scope, receive, send)
                return
        elif live.takes(scope):  # when the FastAPI app is served as is (not app.Served)
            await live.serve(scope["app"].state.ctx, scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _board(self, scope: Scope, send: Send, cid: str) -> bool:
        """Serve a page; False hands the request to the framework."""
        query = _board_query(scope["query_string"])
        if query is None or not valid_id(cid):
            return False
        ctx: AppContext = scope["app"].state.ctx
        principal = await _principal(ctx, scope)
        if principal is None:
            return False
        limit, offset, around = query
        try:
            await ratelimit.spend(ctx, principal)
            body = await leaderboard.board(
                ctx, principal, cid, limit=limit, offset=offset, around=around
            )
        except Exception as exc:
            await _refuse(exc, scope, send)
            return True
        await _send_json(send, body)
        return True

    async def _sync(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await _read_body(receive)
        replay = _replaying(raw, receive)
        if not _is_json(scope):
            await self.app(scope, replay, send)
            return
        ctx: AppContext = scope["app"].state.ctx
        principal = await _principal(ctx, scope)
        parsed = _parse_sync(raw) if principal is not None else None
        if parsed is not None:
            note_records(len(parsed.records) if isinstance(parsed, Batch) else 1)
        else:
            note_records(_record_count(raw))
        if principal is None or parsed is None:
            await self.app(scope, replay, send)
            return
        batch = parsed if isinstance(parsed, Batch) else Batch(records=[parsed])
        try:
            await ratelimit.spend(ctx, principal)
            result, clearing = await activity.sync_deferred(ctx, principal, batch)
        except Exception as exc:
            await _refuse(exc, scope, send)
            return
        await _send_json(send, _SYNCED_HEAD + orjson.dumps(result) + _SYNCED_TAIL)
        # The marks' clearing, once the client has its answer (engine.writes.settle).
        try:
            await writes.settle(ctx, clearing)
        except Exception:
            log.exception("clearing the marks of a sync failed; the sweep will push again")


def _board_query(raw: bytes) -> tuple[int, int, str | None] | None:
    """(limit, offset, around) when every parameter is known and valid, else None."""
    limit, offset, around = 100, 0, None
    if not raw:
        return limit, offset, around
    seen: set[bytes] = set()
    for pair in raw.split(b"&"):
        name, eq, value = pair.partition(b"=")
        if not eq or name in seen or b"%" in value or b"+" in value:
            return None
        seen.add(name)
        if name == b"limit" or name == b"offset":
            if not value.isdigit() or len(value) > 9:
                return None
            number = int(value)
            if name == b"limit":
                if not 1 <= number <= MAX_LIMIT:
                    return None
                limit = number
            else:
                if number > MAX_OFFSET:
                    return None
                offset = number
        elif name == b"around":
            text = value.decode("ascii", "replace")
            if not valid_id(text):
                return None
            around = text
        else:
            return None
    return limit, offset, around


async def _principal(ctx: AppContext, scope: Scope) -> Principal | None:
    """The caller when a well-formed bearer token verifies; None otherwise (the
    framework then gives the 401 and counts it against the address)."""
    header = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            if header is not None:
                return None
            header = value
    if header is None:
        return None
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    token = token.strip()
    if not token:
        return None
    try:
        return await ctx.auth.verify(token.decode("latin-1"))
    except Exception:  # the framework verifies again and answers (401, or 503 for a
        return None  # key set it cannot fetch)


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value.split(b";", 1)[0].strip().lower() == b"application/json")
    return False


def _parse_sync(raw: bytes) -> Any:
    """The body as the route's schema reads it, or None to let the route say why not.
    Parsed as JSON first, then validated as Python objects, as FastAPI does."""
    try:
        return _SYNC_BODY.validate_python(orjson.loads(raw))
    except (orjson.JSONDecodeError, ValidationError):
        return None


def _record_count(raw: bytes) -> int:
    """How many records a body that did not validate carried, for the metrics: the
    length of its `records` list, 1 for any other object, 0 for what is not JSON."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return 0
    if isinstance(body, dict):
        records = body.get("records")
        return len(records) if isinstance(records, list) else 1
    return 0


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replaying(raw: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body read already, then the real one's messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replay


async def _send_json(send: Send, body: bytes, status: int = 200) -> None:
    headers = [_JSON, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _refuse(exc: Exception, scope: Scope, send: Send) -> None:
    response = known_error_response(exc)
    if response is None:
        raise exc
    await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}
