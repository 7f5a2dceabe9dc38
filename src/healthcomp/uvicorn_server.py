"""uvicorn's HTTP and WebSocket protocols, with what the service needs of them.

HTTP (`HttpProtocol`): a request's head is bounded in size and in time (SPEC §3).
uvicorn's httptools parser sets no bound on headers: it gathers a header's value
however long it grows (five 26 MB tokens once stalled a worker for seconds and took
600 MB), and a client that sends its head a byte at a time holds a connection forever.

* Size: the bytes of a head are counted as they arrive; past `HC_MAX_HEADER_BYTES`
  (the parser then holds at most that plus one read) the request is answered 431 in
  the SPEC §4 envelope and the connection closed, before the app sees any of it.
* Time: from connecting, and from a request's first byte, the head must be complete
  within `HC_HEADER_TIMEOUT`, or the connection is answered 408 and closed (a head that
  arrives in one read, as nearly all do, never arms a timer). Between
  requests, uvicorn's keep-alive timeout (`HC_KEEP_ALIVE`) closes an idle connection.

WebSocket:

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

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
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


def _head_limits() -> tuple[int, float]:
    """(largest head in bytes, seconds to send it) from the worker's settings."""
    from healthcomp.core.settings import get_settings

    settings = get_settings()
    return settings.max_header_bytes, settings.header_timeout_seconds


def _refusal(status: bytes, error: str, message: str) -> bytes:
    from healthcomp.core.errors import error_body

    body = error_body(int(status.split(b" ", 1)[0]), error, message)
    head = b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
        status,
        len(body),
    )
    return head + b"connection: close\r\n\r\n" + body


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded request head (see the module)."""

    limits: tuple[int, float] | None = None  # read once per worker

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if HttpProtocol.limits is None:
            HttpProtocol.limits = _head_limits()
        self.max_head, self.head_seconds = HttpProtocol.limits
        self.head_open = True  # the next bytes belong to a request's head
        self.head_bytes = 0
        self.head_timer: asyncio.TimerHandle | None = None
        self.refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.head_open:
            self.head_bytes += len(data)
        super().data_received(data)
        if self.head_open:
            # Still in a head after this read (a read that completed it may also carry
            # body bytes; those are not held against it, see on_headers_complete).
            if self.head_bytes > self.max_head:
                self._refuse_large_head()
            elif self.head_timer is None and self.head_bytes:
                # A head begun and not finished: its time runs from here. (A head that
                # arrives in one read, as nearly all do, never arms a timer.)
                self._arm_head_timer()

    def on_headers_complete(self) -> None:
        # The reads so far may hold body bytes too: only when they pass the bound is the
        # head itself measured (request line and header lines, as sent).
        if self.head_bytes > self.max_head and self._head_size() > self.max_head:
            self._refuse_large_head()
            return
        self.head_open = False
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.refused:
            return
        super().on_message_complete()
        self.head_open = True
        self.head_bytes = 0

    def _head_size(self) -> int:
        line = len(self.url) + 16  # method, version, spaces and line end
        return line + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _refuse_large_head(self) -> None:
        self._refuse(
            b"431 Request Header Fields Too Large",
            "headers_too_large",
            f"The request's headers are larger than {self.max_head} bytes.",
        )

    def _arm_head_timer(self) -> None:
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.head_seconds, self._head_too_slow)

    def _disarm_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_too_slow(self) -> None:
        self.head_timer = None
        if self.head_open:
            self._refuse(
                b"408 Request Timeout",
                "request_timeout",
                f"The request's headers did not arrive within {self.head_seconds:g} seconds.",
            )

    def _refuse(self, status: bytes, error: str, message: str) -> None:
        self.head_open = False
        self.refused = True
        self._disarm_head_timer()
        if self.transport.is_closing():
            return
        # Nothing of this request reached the app; a response of an earlier one in
        # flight on this connection is cut short, as a closing server would.
        self.transport.write(_refusal(status, error, message))
        self.transport.close()


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
