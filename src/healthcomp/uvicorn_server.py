"""uvicorn's WebSocket protocol, with what the live leaderboards need of it.

* Shutdown says 1001 (going away: reconnect, to another server), where uvicorn would
  close every open WebSocket with 1012 (service restart).
* An `abort` in the scope's extensions (`ABORT`): a client that stopped reading has a
  full send buffer, so even a close frame cannot reach it; the app cuts it loose
  (healthcomp.live.socket) rather than hold its buffers for as long as the peer lives.

A module of its own so that `healthcomp token` does not import uvicorn, and so spawned
worker processes can find the class by name.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

GOING_AWAY = 1001
ABORT = "healthcomp.abort"


class WebSocketProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        extensions: Any = self.scope.setdefault("extensions", {})
        extensions[ABORT] = self._abort

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
