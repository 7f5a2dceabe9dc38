"""uvicorn's WebSocket protocol, with what the live leaderboards need of it.

* Shutdown says 1001 (going away: reconnect, to another server), where uvicorn would
  close every open WebSocket with 1012 (service restart).
* An `abort` in the scope's extensions (`ABORT`): a client that stopped reading has a
  full send buffer, so even a close frame cannot reach it; the app cuts it loose
  (healthcomp.live.socket) rather than hold its buffers for as long as the peer lives.
* A direct write (`WRITE` in the extensions): frames the app has already encoded for
  the wire (one encoding shared by every client of a board) go to the transport as
  they are, several in one write; a write returns False, without writing, while the
  transport's buffer is full (then the app awaits `writable`).
* Less memory per idle connection (SPEC §8: under 20 KiB): once the handshake is
  answered, the request's headers, the response and the scope's headers are dropped
  (nothing reads them after it), and the incoming queue and the writable flag are plain objects
  instead of an `asyncio.Queue` and an `asyncio.Event`, whose four deques took about
  3.7 KiB per connection before anything was in them.

A module of its own so that `healthcomp token` does not import uvicorn, and so spawned
worker processes can find the class by name.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

GOING_AWAY = 1001
ABORT = "healthcomp.abort"
WRITE = "healthcomp.write"


class _Inbox:
    """What uvicorn's protocol asks of its `asyncio.Queue`, for one reader."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class _Flag:
    """What the protocol asks of its `writable` `asyncio.Event`."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        while not self._set:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            await waiter


class WebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        extensions: Any = self.scope.setdefault("extensions", {})
        extensions[ABORT] = self._abort
        extensions[WRITE] = (self._write, self.writable.wait)

    def _write(self, data: bytes) -> bool:
        """Frames encoded by the app, written as they are; False while the transport's
        buffer is over its high-water mark. Raises once the connection is closing."""
        if self.close_sent or self.disconnected or self.conn.state is not State.OPEN:
            raise ClientDisconnected()
        if not self.writable.is_set():
            return False
        self.transport.write(data)
        return True

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept":
            # The parser's generator frame keeps the request alive: empty its headers.
            if self.request is not None:
                self.request.headers.clear()
            self.request = self.response = None  # type: ignore[assignment]
            self.scope["headers"] = []

    def _abort(self) -> None:
        if not self.transport.is_closing():
            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1006})
            self.transport.abort()

    def shutdown(self) -> None:
        if self.handshake_complete and self.initial_response is None and not self.close_sent:
            self.stop_keepalive()
            self.queue.put_nowait({"type": "websocket.disconnect", "code": GOING_AWAY})
            self.conn.send_close(GOING_AWAY, "server shutting down")
            self.close_sent = True
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()
            return
        super().shutdown()
