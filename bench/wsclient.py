"""A minimal RFC 6455 WebSocket client on an asyncio Protocol, cheap per received frame.

Made for the load tool (bench/ws.py), which holds thousands of connections in one
process and counts every frame: no per-frame task, future or copy beyond the payload
slice; a message is handed to a callback as bytes with the time its last byte arrived.

What it does: the HTTP/1.1 Upgrade handshake (a random `Sec-WebSocket-Key`, the
server's `Sec-WebSocket-Accept` checked, no extensions, no subprotocol); unmasked server
frames of any length, fragmented messages reassembled; server pings answered with a
pong; the closing handshake either way. Every frame the client sends is masked with a
fresh random key. Loopback benchmarking only: no TLS, no proxies, no redirects.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from collections.abc import Callable

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_HEADERS = 16 * 1024  # bytes of an HTTP response head
MAX_MESSAGE = 16 * 1024 * 1024

# (connection, payload, monotonic time of arrival) for every text or binary message.
OnMessage = Callable[["Connection", bytes, float], None]


class HandshakeError(Exception):
    """The server did not switch protocols as RFC 6455 says."""


def accept_for(key: bytes) -> bytes:
    """The `Sec-WebSocket-Accept` a server must answer to `key`."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte key repeated: one big-integer operation, not a loop per byte."""
    n = len(payload)
    if n == 0:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def client_frame(opcode: int, payload: bytes = b"") -> bytes:
    """One final frame, masked (a client MUST mask every frame it sends)."""
    n = len(payload)
    head = bytes((0x80 | opcode,))
    if n < 126:
        head += bytes((0x80 | n,))
    elif n < 1 << 16:
        head += bytes((0x80 | 126,)) + n.to_bytes(2, "big")
    else:
        head += bytes((0x80 | 127,)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    return head + key + mask(payload, key)


class Connection(asyncio.Protocol):
    """One client connection. Create it with `loop.create_connection(lambda: Connection(
    ...), host, port)`, then await `upgraded`; messages go to `on_message`."""

    __slots__ = (
        "_buffer",
        "_fragments",
        "_fragments_size",
        "_key",
        "close_code",
        "close_reason",
        "close_sent",
        "closed",
        "error",
        "host",
        "on_message",
        "path",
        "state",
        "transport",
        "upgraded",
    )

    def __init__(self, host: str, port: int, path: str, on_message: OnMessage) -> None:
        loop = asyncio.get_running_loop()
        self.host = f"{host}:{port}"
        self.path = path
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._key = base64.b64encode(os.urandom(16))
        self._buffer = b""
        self._fragments: list[bytes] | None = None
        self._fragments_size = 0
        self.close_sent = False
        self.close_code: int | None = None  # what the server's close frame said
        self.close_reason = ""
        self.error: str | None = None  # why the client gave up on the connection
        self.state: object = None  # the caller's, per connection

    # --- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        self.transport = transport  # type: ignore[assignment]
        transport.write(
            b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (self.path.encode(), self.host.encode(), self._key)
        )

    def data_received(self, data: bytes) -> None:
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        if not self.upgraded.done():
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > MAX_HEADERS:
                    self._fail("the handshake response head is too long")
                else:
                    self._buffer = data
                return
            try:
                self._check_handshake(data[:end])
            except HandshakeError as exc:
                self._fail(str(exc))
                return
            self.upgraded.set_result(None)
            data = data[end + 4 :]
        self._frames(data, time.monotonic())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(
                HandshakeError(self.error or f"connection lost during the handshake ({exc})")
            )
            self.upgraded.exception()  # retrieved: no warning when nobody awaits it any more
        if not self.closed.done():
            self.closed.set_result(None)

    # --- sending --------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        if self.transport is not None and not self.close_sent:
            self.transport.write(client_frame(TEXT, text.encode()))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; the server answers and drops the TCP connection."""
        if self.transport is None or self.close_sent or self.transport.is_closing():
            return
        self.close_sent = True
        self.transport.write(client_frame(CLOSE, code.to_bytes(2, "big") + reason.encode()))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # --- receiving ------------------------------------------------------------------

    def _check_handshake(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            raise HandshakeError(f"the server answered {lines[0]!r}, not 101")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("upgrade", "").lower() != "websocket":
            raise HandshakeError("no `Upgrade: websocket` in the 101 response")
        if "upgrade" not in headers.get("connection", "").lower():
            raise HandshakeError("no `Connection: Upgrade` in the 101 response")
        if headers.get("sec-websocket-accept", "").encode() != accept_for(self._key):
            raise HandshakeError("a wrong Sec-WebSocket-Accept")
        if headers.get("sec-websocket-extensions"):
            raise HandshakeError("the server chose an extension the client did not offer")

    def _frames(self, data: bytes, now: float) -> None:
        n = len(data)
        i = 0
        while n - i >= 2:
            b0 = data[i]
            b1 = data[i + 1]
            length = b1 & 0x7F
            start = i + 2
            if length == 126:
                if n - i < 4:
                    break
                length = int.from_bytes(data[i + 2 : i + 4], "big")
                start = i + 4
            elif length == 127:
                if n - i < 10:
                    break
                length = int.from_bytes(data[i + 2 : i + 10], "big")
                start = i + 10
            if b1 & 0x80:
                self._fail("the server masked a frame", 1002)
                return
            if b0 & 0x70:
                self._fail("reserved bits set without an extension", 1002)
                return
            end = start + length
            if end > n:
                if length > MAX_MESSAGE:
                    self._fail("a frame over the size limit", 1009)
                    return
                break
            payload = data[start:end]
            i = end
            opcode = b0 & 0x0F
            if opcode in (TEXT, BINARY):
                if self._fragments is not None:
                    self._fail("a new message inside a fragmented one", 1002)
                    return
                if b0 & 0x80:
                    self.on_message(self, payload, now)
                else:
                    self._fragments = [payload]
                    self._fragments_size = length
            elif opcode == CONTINUATION:
                if self._fragments is None:
                    self._fail("a continuation frame without a message", 1002)
                    return
                self._fragments.append(payload)
                self._fragments_size += length
                if self._fragments_size > MAX_MESSAGE:
                    self._fail("a message over the size limit", 1009)
                    return
                if b0 & 0x80:
                    message = b"".join(self._fragments)
                    self._fragments = None
                    self.on_message(self, message, now)
            elif opcode == PING:
                if self.transport is not None and not self.close_sent:
                    self.transport.write(client_frame(PONG, payload))
            elif opcode == PONG:
                pass
            elif opcode == CLOSE:
                self._closed_by_server(payload)
                return
            else:
                self._fail(f"an unknown opcode {opcode:#x}", 1002)
                return
        if i < n:
            self._buffer = data[i:]

    def _closed_by_server(self, payload: bytes) -> None:
        if len(payload) >= 2:
            self.close_code = int.from_bytes(payload[:2], "big")
            self.close_reason = payload[2:].decode("utf-8", "replace")
        else:
            self.close_code = 1005  # no status in the frame
        transport = self.transport
        if transport is None:
            return
        if not self.close_sent:
            self.close_sent = True
            transport.write(client_frame(CLOSE, payload[:2]))
        # The server closes TCP after the handshake; closing our side too is harmless.
        transport.close()

    def _fail(self, why: str, code: int | None = None) -> None:
        self.error = self.error or why
        transport = self.transport
        if transport is None:
            return
        if code is not None and self.upgraded.done() and not self.close_sent:
            self.close_sent = True
            transport.write(client_frame(CLOSE, code.to_bytes(2, "big")))
            transport.close()
        else:
            transport.abort()
