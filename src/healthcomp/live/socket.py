"""`WS /ws/leaderboard/{competition_id}`: the ASGI endpoint (SPEC §7, docs/API.md).

The token (`?token=` or `Sec-WebSocket-Protocol: bearer, <jwt>`), the parameters and
the caller's access to the board are checked before the connection is accepted: the
first snapshot is read as the caller, with the REST leaderboard's rules. A refusal is
then accepted only to say why: an `error` frame with the REST envelope's fields, and
close 1008 (1013 when the client should try again later: rate limit, Redis down,
too many connections here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import orjson
from starlette.types import Receive, Scope, Send

from healthcomp.core import metrics, ratelimit
from healthcomp.core.context import AppContext
from healthcomp.core.deps import reject
from healthcomp.core.errors import AppError, Unauthorized, ValidationFailed, known_error_response
from healthcomp.core.keys import valid_id
from healthcomp.engine import reads
from healthcomp.leaderboard.service import pages_of
from healthcomp.live import frames
from healthcomp.live.hub import Client, Closing, Hub

# What our uvicorn protocol offers in the scope's extensions (healthcomp.uvicorn_server):
# cutting a connection, and writing frames encoded once for many clients.
ABORT = "healthcomp.abort"
WRITE = "healthcomp.write"

log = logging.getLogger("healthcomp.live")

PATH_PREFIX = "/ws/leaderboard/"
DEFAULT_LIMIT, MAX_LIMIT = 10, 100
MAX_CLIENT_FRAME = 4096  # bytes; a client sends only small control frames
CLOSE_WAIT = 1.0  # seconds a close frame may wait for a socket that takes nothing
POLICY, TRY_AGAIN, INTERNAL = 1008, 1013, 1011


def takes(scope: Scope) -> bool:
    """Whether this is a live leaderboard's WebSocket (`serve` answers it)."""
    return scope["type"] == "websocket" and str(scope["path"]).startswith(PATH_PREFIX)


def hub_of(ctx: AppContext) -> Hub:
    return ctx.service("hub", Hub)


def _subprotocol(scope: Scope) -> tuple[str | None, str | None]:
    """The subprotocol to accept and the token offered as one: `bearer, <jwt>` (the
    token alone is accepted too, and then echoed: a browser needs one it offered)."""
    offered = [str(p).strip() for p in scope.get("subprotocols") or []]
    token = next((p for p in offered if p.count(".") == 2), None)  # header.payload.sig
    if "bearer" in offered:
        return "bearer", token
    return token, token


class _Params:
    __slots__ = ("limit", "since", "token")

    def __init__(self, scope: Scope, token: str | None) -> None:
        query = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        if token is None and query.get("token"):
            token = query["token"][-1]
        self.token = token
        self.limit = _integer(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        self.since = _integer(query, "since", None, 0, 2**53)


def _integer(query: dict[str, list[str]], name: str, default: Any, low: int, high: int) -> Any:
    values = query.get(name)
    if not values:
        return default
    raw = values[-1]
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ValidationFailed(
            f"{name} must be an integer from {low} to {high}.",
            details=[{"field": name, "message": "out of range", "type": "value_error"}],
        )
    return int(raw)


async def serve(ctx: AppContext, scope: Scope, receive: Receive, send: Send) -> None:
    """One connection, from the handshake to the close."""
    if (await receive())["type"] != "websocket.connect":
        return
    cid: str = scope["path"][len(PATH_PREFIX) :]
    hub = hub_of(ctx)
    settings = ctx.settings
    # Known before anything can fail, so that even a refusal is accepted as offered.
    subprotocol, offered_token = _subprotocol(scope)
    try:
        params = _Params(scope, offered_token)
        try:
            if params.token is None:
                raise Unauthorized("A token is required: ?token=<jwt> or the bearer subprotocol.")
            principal = await ctx.auth.verify(params.token)
        except Unauthorized:
            # As on REST: a failed token counts against the address (429 past the limit).
            await reject(ctx, scope)
            raise
        await ratelimit.spend(ctx, principal)
        if not valid_id(cid):
            raise ValidationFailed(
                "The competition id is not valid.",
                details=[
                    {"field": "competition_id", "message": "invalid id", "type": "value_error"}
                ],
            )
        # The caller's own view, as the REST leaderboard: the access check and the
        # first snapshot in one read.
        head = frames.board_head(cid, snapshot=True, resync=params.since is not None)
        version, snapshot = await pages_of(ctx).frame(
            principal, cid, limit=params.limit, head=head, with_me=True
        )
    except Exception as exc:
        await _refuse(send, exc, subprotocol)
        return
    if hub.connections >= settings.ws_max_connections:
        busy = AppError(
            "This server holds all the connections it may; try again (or another one).",
            error="too_many_connections",
            status=503,
        )
        await _refuse(send, busy, subprotocol)
        return
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    hub.opened()
    extensions = scope.get("extensions") or {}
    client = Client(principal, params.limit, send, extensions.get(WRITE))
    client.via_public = not principal.is_service and b',"me":null,' in snapshot
    pump: asyncio.Task[None] | None = None
    try:
        try:
            await hub.join(client, cid)
        except Exception:
            log.warning("live events unavailable for %s", cid, exc_info=True)
            message = "Live updates are unavailable right now; try again shortly."
            with contextlib.suppress(Exception):
                await send(_text(frames.error("unavailable", message, code=503)))
            await _close(send, TRY_AGAIN, message)
            return
        since = params.since
        resumed = since is not None and await _in_backlog(ctx, cid, since, version)
        await client.send(
            _text(
                frames.connected(
                    cid,
                    principal.user_id,
                    heartbeat=settings.ws_heartbeat_seconds,
                    interval_ms=settings.ws_update_interval_ms,
                    limit=params.limit,
                    event_id=since if resumed else version,
                    resumed=resumed,
                )
            )
        )
        if resumed:
            assert since is not None
            client.cursor = client.board_sent = since
            client.catching_up = True
        else:
            client.cursor = client.board_sent = version
            await client.send(_text(snapshot.decode()))
        exp = principal.claims.get("exp")
        if isinstance(exp, int | float):  # closed with 1008 then, as REST would refuse it
            client.expires = float(exp) + settings.jwt_leeway_seconds
        abort = extensions.get(ABORT)
        pump = asyncio.get_running_loop().create_task(_pump(hub, client, abort))
        client.task = pump
        await _listen(client, receive)
    finally:
        if pump is not None and not pump.done():
            pump.cancel()
            with contextlib.suppress(BaseException):
                await pump
        hub.leave(client)
        hub.closed()


async def _in_backlog(ctx: AppContext, cid: str, since: int, version: int) -> bool:
    """Whether every event after `since` is still in the stream (or none is missed)."""
    if since >= version:
        return since == version
    first = await reads.events_since(ctx, cid, since, 1)
    return bool(first) and first[0].event_id == since + 1


def _text(frame: str) -> dict[str, Any]:
    return {"type": "websocket.send", "text": frame}


async def _pump(hub: Hub, client: Client, abort: Callable[[], None] | None) -> None:
    """The client's sends; any end closes the socket with the code that says why."""
    try:
        await client.pump(hub)
    except Closing as closing:
        await _close(client.send, closing.code, closing.reason, abort)
    except asyncio.CancelledError:
        if not client.stuck:
            raise
        # A send blocked for the send timeout: the peer stopped reading.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        await _close(client.send, TRY_AGAIN, "too slow: the socket took no data", abort)
    except OSError:
        return  # the client went away (the server's ClientDisconnected)
    except Exception as exc:
        code, frame = _refusal(exc)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.send(_text(frame)), CLOSE_WAIT)
        await _close(client.send, code, frame_reason(frame), abort)


async def _listen(client: Client, receive: Receive) -> None:
    """The client's frames until it goes: pings answered, anything else explained."""
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.disconnect":
            return
        if kind != "websocket.receive":
            continue
        text = message.get("text")
        if text is None:
            client.reply(frames.error("bad_frame", "Send JSON text frames, not binary."))
            continue
        if len(text) > MAX_CLIENT_FRAME or len(text.encode()) > MAX_CLIENT_FRAME:
            client.reply(frames.error("bad_frame", "A frame is at most 4096 bytes."))
            continue
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            client.reply(frames.error("bad_frame", "A frame must be a JSON object."))
            continue
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "ping":
            client.reply(frames.PONG)
        elif kind == "pong":
            continue
        elif not isinstance(kind, str):
            client.reply(frames.error("bad_frame", 'A frame needs a "type", e.g. {"type":"ping"}.'))
        else:
            client.reply(frames.error("unknown_type", f"Unknown frame type {kind[:40]!r}."))


def _refusal(exc: BaseException) -> tuple[int, str]:
    """The close code and the `error` frame for what stopped a connection."""
    response = known_error_response(exc) if isinstance(exc, Exception) else None
    if response is None:
        log.exception("a live connection failed", exc_info=exc)
        return INTERNAL, frames.error("internal_error", "Something went wrong.", code=500)
    body = orjson.loads(bytes(response.body))
    body.pop("success", None)
    status = response.status_code
    code = TRY_AGAIN if status in (429, 503) else POLICY if status < 500 else INTERNAL
    if isinstance(exc, AppError) and exc.headers.get("Retry-After"):
        body["retry_after"] = exc.headers["Retry-After"]
    return code, orjson.dumps({"type": "error", **body}).decode()


async def _refuse(send: Send, exc: BaseException, subprotocol: str | None) -> None:
    """Accept only to say why, then close: a browser sees the close code and frame,
    never an HTTP status."""
    code, frame = _refusal(exc)
    metrics.WS_REFUSED.labels(str(orjson.loads(frame).get("error", "internal_error"))).inc()
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    await send(_text(frame))
    await _close(send, code, frame_reason(frame))


def frame_reason(frame: str) -> str:
    reason = str(orjson.loads(frame).get("message", ""))
    return reason.encode()[:120].decode("utf-8", "ignore")


async def _close(
    send: Send, code: int, reason: str, abort: Callable[[], None] | None = None
) -> None:
    """Send the close frame; a socket that takes nothing within `CLOSE_WAIT` is cut
    (`abort`, where the server offers one)."""
    try:
        await asyncio.wait_for(
            send({"type": "websocket.close", "code": code, "reason": reason[:120]}), CLOSE_WAIT
        )
    except Exception:
        if abort is not None:
            abort()
