"""One process's live fan-out: one pub/sub reader, a room per watched competition.

Order and completeness. Events of a board have consecutive ids (the board version).
A room takes them from the channel; one that arrives with a gap behind it (a message
lost while the reader reconnected, or sent before the subscription was confirmed)
makes the room read the missing ones from the competition's stream first, so clients
see every id once and in order. After a reconnect every room reads what it missed the
same way.

Cost. A competition with no client in this process has no room and no subscription.
An event is encoded once per room; a `rank_change` only when a client it concerns
needs it. A client that keeps up is written to from the room's wake-up; its pump
sends the rest from the room's last `ws_max_lag` events; a client further behind (a
slow socket, a long resume) is sent a fresh snapshot instead. A send that makes no
progress for `ws_send_timeout_seconds` closes that client with 1013.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Coroutine
from itertools import islice
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot
from redis.exceptions import MovedError, RedisError, ResponseError
from starlette.types import Send

from healthcomp.core import metrics
from healthcomp.core.auth import SERVICE, Principal
from healthcomp.core.context import AppContext
from healthcomp.engine import reads
from healthcomp.engine.model import parse_event
from healthcomp.leaderboard.service import pages_of
from healthcomp.live import frames

log = logging.getLogger("healthcomp.live")

_BOARD_READER = Principal(role=SERVICE, user_id=None)
SUBSCRIBE_TIMEOUT = 5.0
# How long a room whose shard channel left its node (a failover, a resharding) tries to
# subscribe again before its clients are told to reconnect (1012).
RESUBSCRIBE_SECONDS = 30.0
CATCH_UP_CHUNK = 200  # events read from a stream at once for one client
PULSE_SLICE = 500  # clients written to in one turn of the event loop (a few ms)


Address = tuple[str, int]


class Moved(Exception):
    """A subscription was refused by a node that does not serve the channel's slot."""

    def __init__(self, address: Address) -> None:
        super().__init__(f"the channel is served at {address[0]}:{address[1]}")
        self.address = address


class Closing(Exception):
    """Close the client's socket with this code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Out:
    """A frame to send: its text (for an ASGI send) and, made once when first needed,
    its wire encoding (for a direct write), shared by every client it goes to."""

    __slots__ = ("_wire", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._wire: bytes | None = None

    @property
    def wire(self) -> bytes:
        if self._wire is None:
            self._wire = frames.wire(self.text)
        return self._wire


class Delivered(Out):
    """One event as this room sends it: the frame every client gets, and the personal
    `rank_change` frames, made once, the first time a client they concern needs them."""

    __slots__ = ("_data", "_personal", "concerns", "event_id", "leaver")

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(frames.event_frame(data))
        self.event_id = int(data["event_id"])
        self._data: dict[str, Any] | None = None
        self._personal: dict[str, Out] | None = None
        # The users a rank_change goes to: the mover and whom it passed or was passed by.
        self.concerns: frozenset[str] = frozenset()
        if data.get("passed") or data.get("passed_by"):
            self._data = data
            self.concerns = frozenset(
                [str(data["user_id"]), *data.get("passed", ()), *data.get("passed_by", ())]
            )
        # Whoever left the board: their own access is checked again.
        self.leaver: str | None = data.get("user_id") if data.get("type") == "leave" else None

    def outs(self, user: str | None) -> tuple[Out, ...]:
        """What one client gets for this event: the frame, and its own rank_change
        (on the fan-out's path: nothing is made for a client it does not concern)."""
        # A fresh one-tuple: one kept on the object would hold the object itself, a
        # cycle that only the collector frees, and the workers' collector runs its
        # older generations rarely (app.tune_gc): every event stayed in memory.
        if user is None or user not in self.concerns:
            return (self,)
        if self._personal is None:
            assert self._data is not None
            made = frames.personal_frames(self._data)
            self._personal = {u: Out(text) for u, text in made.items()}
            self._data = None
        personal = self._personal.get(user)
        return (self,) if personal is None else (self, personal)


Write = tuple[Callable[[bytes], bool], Callable[[], Coroutine[Any, Any, Any]]]


class Client:
    """One WebSocket connection watching one board.

    What it is owed (events after its cursor, the room's newest board, a heartbeat)
    goes out by `flush` when it can be written at once: all of it in one write, from
    the room's wake-up, with no task switch (the common case, a client keeping up).
    Anything else is its pump's: a full socket buffer, a resume from the stream, a
    snapshot, replies to its own frames, a close."""

    __slots__ = (
        "beat",
        "board_sent",
        "catching_up",
        "closing",
        "cursor",
        "expires",
        "limit",
        "principal",
        "recheck",
        "replies",
        "room",
        "send",
        "sending_since",
        "stuck",
        "task",
        "via_public",
        "waiter",
        "write",
    )

    def __init__(self, principal: Principal, limit: int, send: Send, write: Write | None) -> None:
        self.principal = principal
        self.limit = limit
        self.send = send  # the ASGI send
        self.write = write  # the server's direct write and its wait, where offered
        self.room: Room | None = None
        self.cursor = 0  # the last event id this client has (sent or in a snapshot)
        self.board_sent = 0  # the version of the last leaderboard_update sent
        self.beat = 0
        self.catching_up = False  # resuming with `since`: the lag bound waits
        self.replies: list[str] = []  # answers to the client's own frames
        self.closing: Closing | None = None
        self.sending_since = 0.0  # monotonic time a send began, 0 when none is under way
        self.waiter: asyncio.Future[None] | None = None  # set while the pump is idle
        self.task: asyncio.Task[None] | None = None  # the pump, once started
        self.stuck = False  # a send made no progress for the send timeout
        # Watching a public board it has no part in (access ends if it turns private).
        self.via_public = False
        self.recheck = False  # check access again (with a snapshot) before going on
        self.expires = float("inf")  # when the token expires (time.time()), leeway added

    @property
    def user_id(self) -> str | None:
        return self.principal.user_id

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self, code: int, reason: str) -> None:
        if self.closing is None:
            self.closing = Closing(code, reason)
        self.wake()

    def reply(self, frame: str) -> None:
        if len(self.replies) < 32:  # a client flooding pings gets some of them answered
            self.replies.append(frame)
        self.wake()

    def flush(self, max_lag: int) -> bool:
        """Write everything owed at once, without waiting. False, having written
        nothing, when the pump must do it (or there is nothing to write it with);
        raises OSError when the connection is gone."""
        room = self.room
        if self.write is None or room is None:
            return False
        if self.closing is not None or self.replies or self.recheck:
            return False
        parts: list[bytes] = []
        cursor = self.cursor
        if cursor < room.last:
            if not self.catching_up and room.last - cursor > max_lag:
                return False
            events = room.after(cursor)
            if events is None:
                return False
            user = self.user_id
            for ev in events:
                if user is not None and ev.leaver == user:
                    return False  # the pump sends it, then checks the access again
                parts.extend(out.wire for out in ev.outs(user))
            cursor = room.last
        board = room.boards.get(self.limit)
        board_sent = self.board_sent
        if board is not None and board_sent < board[0] <= cursor:
            parts.append(board[1].wire)
            board_sent = board[0]
        if self.beat < room.beat:
            parts.append(room.beat_frame.wire)
        if parts:
            if not self.write[0](parts[0] if len(parts) == 1 else b"".join(parts)):
                return False
            metrics.DELIVERED.add(())
        self.cursor, self.board_sent, self.beat = cursor, board_sent, room.beat
        self.catching_up = False
        return True

    async def _send(self, frame: Out | str) -> None:
        out = frame if isinstance(frame, Out) else Out(frame)
        self.sending_since = time.monotonic()
        if self.write is None:
            await self.send({"type": "websocket.send", "text": out.text})
        else:
            write, writable = self.write
            while not write(out.wire):
                await writable()
        self.sending_since = 0.0
        metrics.DELIVERED.add(())

    async def pump(self, hub: Hub) -> None:
        """Send what this client has not had yet, until it closes. Raises `Closing`."""
        room = self.room
        assert room is not None
        max_lag = hub.ctx.settings.ws_max_lag
        loop = asyncio.get_running_loop()
        while True:
            if self.closing is not None:
                raise self.closing
            if self.replies:
                replies, self.replies = self.replies, []
                for frame in replies:
                    await self._send(frame)
                continue
            if self.recheck:
                self.recheck = False
                await self.snapshot(hub, resync=False)  # raises NotFound without access
                continue
            if not self.flush(max_lag):
                if await self._catch_up(hub, room, max_lag):
                    continue
                self.catching_up = False
                board = room.boards.get(self.limit)
                if board is not None and self.board_sent < board[0] <= self.cursor:
                    self.board_sent = board[0]
                    await self._send(board[1])
                    continue
                if self.beat < room.beat:
                    self.beat = room.beat
                    await self._send(room.beat_frame)
                    continue
            self.waiter = loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    async def _catch_up(self, hub: Hub, room: Room, max_lag: int) -> bool:
        """Send the events after the cursor one by one (from the ring, else the
        stream), or a snapshot instead; False when there were none to send."""
        if self.cursor >= room.last:
            return False
        if not self.catching_up and room.last - self.cursor > max_lag:
            await self.snapshot(hub, resync=True)
            return True
        events = room.after(self.cursor)
        if events is None:
            events = await room.read(self.cursor, min(CATCH_UP_CHUNK, room.last - self.cursor))
            if not events or events[0].event_id != self.cursor + 1:
                # Older than the backlog: a snapshot instead of the events.
                await self.snapshot(hub, resync=True)
                return True
        user = self.user_id
        for ev in events:
            if ev.event_id != self.cursor + 1:
                continue
            for out in ev.outs(user):
                await self._send(out)
            if user is not None and ev.leaver == user:
                self.recheck = True
            self.cursor = ev.event_id
            if self.closing is not None or self.replies or self.recheck:
                break
        return True

    async def snapshot(self, hub: Hub, *, resync: bool) -> None:
        """Send the top of the board with the caller's own entry; later events follow
        from its version. Access is checked again (a board can turn private)."""
        room = self.room
        assert room is not None
        head = frames.board_head(room.cid, snapshot=True, resync=resync)
        version, body = await pages_of(hub.ctx).frame(
            self.principal, room.cid, limit=self.limit, head=head, with_me=True
        )
        self.cursor = max(self.cursor, version)
        self.board_sent = max(self.board_sent, version)
        self.catching_up = False
        await self._send(body.decode())


class Room:
    """The clients of one competition in this process and its recent events."""

    def __init__(self, hub: Hub, cid: str) -> None:
        self.hub = hub
        self.cid = cid
        self.channel = reads.events_channel(hub.ctx, cid)
        self.clients: set[Client] = set()
        self.last = 0  # the last event id taken in order
        self.ring: deque[Delivered] = deque(maxlen=hub.ctx.settings.ws_max_lag)
        self.boards: dict[int, tuple[int, Out]] = {}  # limit -> (version, frame)
        self.beat = 0
        self.beat_frame = Out(frames.heartbeat(0, int(time.time() * 1000)))
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.held: dict[int, dict[str, Any]] = {}  # arrived ahead of a gap
        self.filling = False
        self._refresh: asyncio.TimerHandle | None = None
        self._refreshed = 0.0
        self._refreshing = False
        self._pulse_pending = False

    # --- clients ------------------------------------------------------------------

    def add(self, client: Client) -> None:
        self.clients.add(client)
        client.room = self
        client.beat = self.beat

    def remove(self, client: Client) -> None:
        self.clients.discard(client)

    def pulse(self) -> None:
        """Give each idle client what it is owed: written at once where it can be, its
        pump woken where it cannot (a busy pump finds it when it loops). In slices of
        `PULSE_SLICE` clients, one per turn of the loop, so that the requests this
        process serves meanwhile wait a slice, not the whole board's fan-out."""
        self._pulse_slice(list(self.clients), 0)

    def _pulse_slice(self, clients: list[Client], start: int) -> None:
        max_lag = self.hub.ctx.settings.ws_max_lag
        end = start + PULSE_SLICE
        for client in clients[start:end]:
            if client.waiter is None:
                continue
            try:
                done = client.flush(max_lag)
            except OSError:  # gone: its pump ends on its next send
                done = False
            if not done:
                client.wake()
        if end < len(clients):
            asyncio.get_running_loop().call_soon(self._pulse_slice, clients, end)

    def heartbeat(self) -> None:
        self.beat += 1
        self.beat_frame = Out(frames.heartbeat(self.last, int(time.time() * 1000)))
        self.pulse()

    # --- events -------------------------------------------------------------------

    def offer(self, data: dict[str, Any]) -> None:
        """An event from the channel (or the stream), in whatever order it came."""
        event_id = int(data["event_id"])
        if event_id <= self.last:
            return
        if self.filling or event_id != self.last + 1:
            self.held[event_id] = data
            if not self.filling:
                self._fill()
            return
        self._take(data)
        self._advanced()

    def _take(self, data: dict[str, Any]) -> None:
        metrics.LIVE_EVENTS.inc()
        at = data.get("at")
        if at is not None:
            metrics.LIVE_LAG.observe(max(0.0, time.time() - int(at) / 1000))
        delivered = Delivered(data)
        self.ring.append(delivered)
        self.last = delivered.event_id

    def _fill(self) -> None:
        self.filling = True
        self.hub.spawn(self._fill_from_stream())

    async def _fill_from_stream(self) -> None:
        """Take the events after `last` from the stream, then those held back."""
        try:
            stalled = 0
            while True:
                try:
                    events = await reads.events_since(self.hub.ctx, self.cid, self.last, 1000)
                except Exception:
                    log.warning("reading the events of %s failed; retrying", self.cid)
                    await asyncio.sleep(0.5)
                    continue
                before = self.last
                for ev in events:
                    if ev.event_id > self.last:
                        if ev.event_id != self.last + 1:
                            # Trimmed from the stream already: clients behind this
                            # point get a snapshot (the ring restarts here).
                            self.ring.clear()
                        self._take(ev.data)
                for event_id in sorted(self.held):
                    if event_id == self.last + 1:
                        self._take(self.held[event_id])
                    if event_id <= self.last:
                        del self.held[event_id]
                if len(events) < 1000 and not self.held:
                    return
                stalled = stalled + 1 if self.last == before else 0
                if stalled >= 3:  # held events the stream never had: take them as they are
                    self.ring.clear()
                    for event_id in sorted(self.held):
                        self._take(self.held.pop(event_id))
                    return
        finally:
            self.filling = False
            self.held.clear()
            self._advanced()

    def _pulse_soon(self) -> None:
        """Wake the clients once for all the events taken in this turn of the loop (a
        burst read from the link at once wakes each pump once, not once per event)."""
        if not self._pulse_pending:
            self._pulse_pending = True
            asyncio.get_running_loop().call_soon(self._pulse_now)

    def _pulse_now(self) -> None:
        self._pulse_pending = False
        self.pulse()

    def _advanced(self) -> None:
        """New events: the board is read again now if the interval allows it, and the
        events go out with it (one write per client); else they go out at once and
        the board follows when the interval is over."""
        if self._refresh is None and not self._refreshing:
            loop = asyncio.get_running_loop()
            interval = self.hub.ctx.settings.ws_update_interval_ms / 1000
            delay = self._refreshed + interval - loop.time()
            if delay <= 0:
                self._start_refresh()  # pulses when done
                return
            self._refresh = loop.call_later(delay, self._start_refresh)
        self._pulse_soon()

    def _start_refresh(self) -> None:
        self._refresh = None
        self._refreshing = True
        self.hub.spawn(self._refresh_boards())

    async def _refresh_boards(self) -> None:
        """One `leaderboard_update` per limit the clients asked for, encoded once."""
        try:
            limits = {client.limit for client in self.clients}
            head = frames.board_head(self.cid, snapshot=False, resync=False)
            pages = pages_of(self.hub.ctx)
            for limit in limits:
                try:
                    version, body = await pages.frame(
                        _BOARD_READER, self.cid, limit=limit, head=head, with_me=False
                    )
                except Exception:
                    log.warning("reading the board of %s failed", self.cid, exc_info=True)
                    continue
                known = self.boards.get(limit)
                if known is None or known[0] < version:
                    self.boards[limit] = (version, Out(body.decode()))
            for limit in list(self.boards):
                if limit not in limits:
                    del self.boards[limit]
        finally:
            self._refreshing = False
            self._refreshed = asyncio.get_running_loop().time()
            self.pulse()
            newest = max((b[0] for b in self.boards.values()), default=0)
            if newest < self.last and self.clients:
                self._advanced()

    def after(self, cursor: int) -> list[Delivered] | None:
        """The kept events after `cursor`, None when the ring does not reach back."""
        ring = self.ring
        if not ring or cursor + 1 < ring[0].event_id:
            return None
        return list(islice(ring, cursor + 1 - ring[0].event_id, None))

    async def read(self, cursor: int, count: int) -> list[Delivered]:
        """Events after `cursor` from the stream (a resume, or a client behind the
        ring), encoded for this room."""
        events = await reads.events_since(self.hub.ctx, self.cid, cursor, count)
        return [Delivered(ev.data) for ev in events]


class Hub:
    """The process's rooms and its pub/sub links."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.rooms: dict[str, Room] = {}
        self.by_channel: dict[str, Room] = {}
        self.links: dict[str, _Link] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.connections = 0
        self._none_left = asyncio.Event()
        self._none_left.set()
        self._beat: asyncio.Task[None] | None = None

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in the background; cancelled by `stop`."""
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def start(self) -> None:
        if self._beat is None:
            self._beat = asyncio.get_running_loop().create_task(self._heartbeats())

    # --- rooms ------------------------------------------------------------------

    async def join(self, client: Client, cid: str) -> Room:
        """Put the client in the competition's room, made and subscribed if new.
        Raises when the subscription cannot be made (Redis unreachable)."""
        self.start()
        room = self.rooms.get(cid)
        if room is None:
            room = self.rooms[cid] = Room(self, cid)
            self.by_channel[room.channel] = room
            self.spawn(self._open(room))
        room.add(client)
        try:
            await asyncio.shield(room.ready)
        except BaseException:
            self.leave(client)
            raise
        return room

    async def _open(self, room: Room) -> None:
        try:
            await self._subscribe(room.channel)
            # Subscribed first, then the version: an event after it arrives on the
            # channel, and one between the two is a gap the room fills.
            state = await reads.board_state(self.ctx, room.cid)
            room.last = state.version if state is not None else 0
            room.ready.set_result(None)
            if not room.clients:  # all gone while it opened
                self._close_room(room)
            elif room.held:  # published while the version was being read
                room._fill()
        except BaseException as exc:
            self._close_room(room)
            room.ready.set_exception(exc)
            room.ready.exception()  # read here: the clients may all have gone
            if not isinstance(exc, Exception):
                raise

    def leave(self, client: Client) -> None:
        room = client.room
        if room is None:
            return
        room.remove(client)
        client.room = None
        if not room.clients and room.ready.done():
            self._close_room(room)

    def _close_room(self, room: Room) -> None:
        """Forget the room and drop its subscription (unless a newer room has both)."""
        if room._refresh is not None:
            room._refresh.cancel()
            room._refresh = None
        if self.rooms.get(room.cid) is not room:
            return
        del self.rooms[room.cid]
        self.by_channel.pop(room.channel, None)
        for link in self.links.values():
            if room.channel in link.channels:
                link.unsubscribe(room.channel)

    def on_message(self, channel: str, payload: str) -> None:
        room = self.by_channel.get(channel)
        if room is None:
            return
        try:
            data = parse_event(payload)
        except ValueError:
            log.warning("an unreadable event on %s", channel)
            return
        if room.ready.done():
            room.offer(data)
        else:  # kept until the room knows where it starts (`_open`)
            room.held[int(data["event_id"])] = data

    async def _subscribe(self, channel: str, address: Address | None = None) -> _Link:
        """Subscribe where the channel is served (the node of its slot in a cluster),
        following a node's MOVED answer to where the slot is now."""
        for _ in range(3):
            link = await self._link_for(channel, address)
            try:
                await link.subscribe(channel)
                return link
            except Moved as moved:
                address = moved.address
        raise ConnectionError(f"the slot of {channel} kept moving")

    def resubscribe(self, channel: str, address: Address | None) -> None:
        """The cluster node that had the room's shard channel does not serve its slot
        any more (it answered MOVED, or cannot be reached): subscribe again where the
        slot is now, then read what was published meanwhile from the stream. The
        clients stay connected."""
        room = self.by_channel.get(channel)
        if room is not None:
            self.spawn(self._resubscribe(room, address))

    async def _resubscribe(self, room: Room, address: Address | None) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + RESUBSCRIBE_SECONDS
        delay = 0.1
        while self.rooms.get(room.cid) is room:
            try:
                link = await self._subscribe(room.channel, address)
            except Exception as exc:
                if loop.time() > give_up:
                    for client in room.clients:
                        client.close(1012, "this board moved to another Redis node; reconnect")
                    self._close_room(room)
                    return
                log.warning("subscribing to the events of %s again failed (%s)", room.cid, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                address = None
                if self.ctx.redis.mode == "cluster":
                    await _refresh_slots(self.ctx)
                continue
            if self.by_channel.get(room.channel) is None:  # the room closed meanwhile
                link.unsubscribe(room.channel)
            else:
                self.refill({room.channel})  # what was published while no node had it
            return

    def refill(self, channels: set[str]) -> None:
        """After a reconnect: each room reads what it missed from its stream."""
        for channel in channels:
            room = self.by_channel.get(channel)
            if room is not None and room.ready.done() and not room.filling:
                room._fill()

    async def _link_for(self, channel: str, address: Address | None = None) -> _Link:
        """The link to the server, or to the cluster node at `address`, else to the one
        the client's slot map names for the channel."""
        ctx = self.ctx
        if ctx.redis.mode == "cluster":
            await ctx.r.initialize()
            if address is None:
                owner = ctx.r.get_node_from_key(channel)
                address = (str(owner.host), int(owner.port))
            host, port = address
            name = f"{host}:{port}"
            node = ctx.r.get_node(host=host, port=port) or ctx.r.get_default_node()
            kwargs = dict(node.connection_kwargs, host=host, port=port)
            connection_class = node.connection_class
        else:
            name = "main"
            pool = ctx.r.connection_pool
            kwargs = dict(pool.connection_kwargs)
            connection_class = pool.connection_class
        link = self.links.get(name)
        if link is None or link.ended:
            kwargs.update(socket_timeout=None, health_check_interval=0)

            def factory() -> AbstractConnection:
                conn: AbstractConnection = connection_class(**kwargs)
                return conn

            link = self.links[name] = _Link(self, factory)
        return link

    # --- heartbeats, slow clients, shutdown -------------------------------------

    async def _heartbeats(self) -> None:
        settings = self.ctx.settings
        period = settings.ws_heartbeat_seconds
        # Slow sends and expired tokens are found within a second (or a heartbeat).
        check = min(1.0, period)
        since_beat = 0.0
        while True:
            await asyncio.sleep(check)
            since_beat += check
            beat = since_beat >= period
            if beat:
                since_beat = 0.0
            now, wall = time.monotonic(), time.time()
            limit = settings.ws_send_timeout_seconds
            for room in list(self.rooms.values()):
                if beat:
                    room.heartbeat()
                    await self._still_public(room)
                for client in list(room.clients):
                    if wall >= client.expires:
                        client.close(1008, "token expired: reconnect with a fresh one")
                    since = client.sending_since
                    if since and now - since > limit and not client.stuck:
                        # Blocked in a send: stop it (socket.serve closes or cuts it).
                        client.stuck = True
                        if client.task is not None:
                            client.task.cancel()

    def opened(self) -> None:
        self.connections += 1
        metrics.WS_OPEN.inc()
        self._none_left.clear()

    def closed(self) -> None:
        self.connections -= 1
        metrics.WS_OPEN.dec()
        if self.connections <= 0:
            self._none_left.set()

    async def _still_public(self, room: Room) -> None:
        """A board turned private (an edit, which is no board event) stops reaching the
        users who watched it only because it was public: checked every heartbeat."""
        outsiders = [c for c in room.clients if c.via_public]
        if not outsiders:
            return
        try:
            state = await pages_of(self.ctx).states.get(room.cid)
        except Exception:
            return
        if state is None or not state.public:
            for client in outsiders:
                client.recheck = True
                client.wake()

    async def close_all(self, code: int, reason: str, wait: float = 2.0) -> None:
        """Close every client (1001 on shutdown) and give them `wait` seconds."""
        for room in self.rooms.values():
            for client in room.clients:
                client.close(code, reason)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._none_left.wait(), wait)

    async def stop(self) -> None:
        await self.close_all(1001, "server shutting down")
        tasks = [t for t in (self._beat, *self.tasks) if t is not None]
        for link in self.links.values():
            tasks.extend(link.stop())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


async def _refresh_slots(ctx: AppContext) -> None:
    """Read the cluster's slot map again (a node stopped answering or gave a slot up)."""
    with contextlib.suppress(Exception):
        await ctx.r.nodes_manager.initialize()


class _Link:
    """One pub/sub connection (to the server, or to one node of a cluster) and the
    task reading it. Reconnects by itself; every room it serves then refills.

    In a cluster, a node drops the shard channels of a slot it stops serving (a
    failover makes it a replica, a resharding moves the slot): the link subscribes
    again on the same node, which accepts if it is now the replica of the slot's
    master (it still receives the slot's messages) and else answers MOVED; a channel
    answered MOVED goes back to the hub, which subscribes it where the slot is now. A
    node that cannot be reached for a few attempts in a row (it died, and a replica
    took its place) gives all its channels back the same way, and the link ends."""

    GIVE_UP_AFTER = 3  # failed connection attempts in a row, in a cluster

    def __init__(self, hub: Hub, factory: Callable[[], AbstractConnection]) -> None:
        self.hub = hub
        self.factory = factory
        # Shard channels on Redis 7 and newer, as the scripts publish (set on connect).
        self.sub, self.unsub = "SSUBSCRIBE", "SUNSUBSCRIBE"
        self.channels: set[str] = set()
        self.acks: dict[str, asyncio.Future[None]] = {}
        self.conn: AbstractConnection | None = None
        self.task: asyncio.Task[None] | None = None
        self.ended = False
        self.cluster = hub.ctx.redis.mode == "cluster"

    async def subscribe(self, channel: str) -> None:
        """Raises Moved when the node does not serve the channel's slot."""
        self.channels.add(channel)
        ack = self.acks.get(channel)
        if ack is None or ack.done():
            ack = self.acks[channel] = asyncio.get_running_loop().create_future()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        elif self.conn is not None:
            await self._send(self.conn, self.sub, channel)
        await asyncio.wait_for(asyncio.shield(ack), SUBSCRIBE_TIMEOUT)

    def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        self.acks.pop(channel, None)
        conn = self.conn
        if conn is not None:
            self.hub.spawn(self._unsubscribe(conn, channel))

    async def _unsubscribe(self, conn: AbstractConnection, channel: str) -> None:
        if channel not in self.channels:  # else subscribed again meanwhile
            await self._send(conn, self.unsub, channel)

    async def _send(self, conn: AbstractConnection, command: str, channel: str) -> None:
        """Send on the link's connection while it is up. A connection going down takes
        the command with it, and that is fine: the reconnect subscribes every channel
        of the link anew. Never connects again itself (redis-py would, on a closed
        connection): a connection made here would be one nobody reads."""
        if conn is not self.conn or not conn.is_connected:
            return
        with contextlib.suppress(RedisError, OSError):
            await conn.send_command(command, channel, check_health=False)

    def stop(self) -> list[asyncio.Task[None]]:
        return [self.task] if self.task is not None else []

    def _give_back(self, channel: str, address: Address | None) -> None:
        """The channel is not this link's any more: to whoever waits for its
        subscription, else to the hub, to subscribe it elsewhere (at `address` when a
        node said where)."""
        self.channels.discard(channel)
        ack = self.acks.pop(channel, None)
        if ack is not None and not ack.done():
            gone = ConnectionError("the node cannot be reached")
            ack.set_exception(Moved(address) if address is not None else gone)
            ack.exception()  # retrieved: its waiter may have given up already
        else:
            self.hub.resubscribe(channel, address)

    async def _run(self) -> None:
        delay = 0.1
        first = True
        failed = 0
        while True:
            conn = self.factory()
            try:
                try:
                    await conn.connect()  # type: ignore[no-untyped-call]
                except Exception:
                    failed += 1
                    if self.cluster and failed >= self.GIVE_UP_AFTER:
                        # The node is gone (a failover replaced it, say): its channels
                        # are served elsewhere now.
                        self.ended = True
                        await _refresh_slots(self.hub.ctx)
                        for channel in sorted(self.channels):
                            self._give_back(channel, None)
                        log.warning("the live events link to a node gave up its channels")
                        return
                    raise
                failed = 0
                await conn.send_command("INFO", "server")
                info = str(await conn.read_response())
                version = re.search(r"redis_version:(\d+)", info)
                sharded = version is not None and int(version.group(1)) >= 7
                self.sub, self.unsub = (
                    ("SSUBSCRIBE", "SUNSUBSCRIBE") if sharded else ("SUBSCRIBE", "UNSUBSCRIBE")
                )
                self.conn = conn
                if self.channels:
                    # One command each: a cluster refuses shard channels of several
                    # slots in one SSUBSCRIBE (CROSSSLOT).
                    await conn.send_packed_command(
                        conn.pack_commands([(self.sub, c) for c in sorted(self.channels)])
                    )
                if not first:
                    metrics.REDIS_RECONNECTS.labels("events").inc()
                    self.hub.refill(set(self.channels))
                first = False
                delay = 0.1
                await self._read(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("the live events link dropped (%s); reconnecting", exc)
                metrics.REDIS_ERRORS.labels("events_link").inc()
            finally:
                self.conn = None
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _read(self, conn: AbstractConnection) -> None:
        period = self.hub.ctx.settings.ws_heartbeat_seconds
        asked = False
        while True:
            try:
                msg = await conn.read_response(timeout=period)
            except MovedError as exc:
                # A subscription sent to a node that does not serve its slot.
                address = (str(exc.host), int(exc.port))
                for channel in sorted(self.channels):
                    if key_slot(channel.encode()) == exc.slot_id:
                        self._give_back(channel, address)
                continue
            except ResponseError as exc:  # the connection is still in step
                log.warning("the live events link was refused a command: %s", exc)
                continue
            if msg is None:
                if asked:
                    raise ConnectionError("Redis did not answer a PING on the events link")
                await conn.send_command("PING")
                asked = True
                continue
            asked = False
            if not isinstance(msg, list) or not msg:
                continue
            kind = str(msg[0])
            if kind in ("message", "smessage"):
                self.hub.on_message(str(msg[1]), msg[2])
            elif kind in ("subscribe", "ssubscribe"):
                ack = self.acks.get(str(msg[1]))
                if ack is not None and not ack.done():
                    ack.set_result(None)
            elif kind in ("unsubscribe", "sunsubscribe") and str(msg[1]) in self.channels:
                # An unsubscribe that crossed a new subscribe, or a cluster node that
                # gave the channel's slot up: subscribe again (MOVED says where to).
                await conn.send_command(self.sub, str(msg[1]))
