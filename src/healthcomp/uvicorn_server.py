"""uvicorn's WebSocket protocol, saying 1001 (going away) when the server shuts down.

uvicorn closes every open WebSocket with 1012 (service restart) on shutdown. The live
leaderboards promise 1001: this server is going away, reconnect (to another one). A
module of its own so that `healthcomp token` does not import uvicorn, and so spawned
worker processes can find the class by name.
"""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

GOING_AWAY = 1001


class WebSocketProtocol(WebSocketsSansIOProtocol):
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
