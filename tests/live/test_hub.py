"""The live fan-out in one process, on the real Redis, with the socket's two ends held by
the test: a send that blocks (a client that stops reading), a pub/sub link that drops,
and the board events of every path (trusted write, leave, cancel, visibility)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from redis.exceptions import ResponseError

from healthcomp.core.context import AppContext
from healthcomp.engine import reads
from healthcomp.live import socket as live
from healthcomp.live.hub import Hub
from tests.conftest import SERVICE_AUTH, auth, make_settings, token
from tests.core.support import running_app
from tests.domain.helpers import API, create_comp, join, rec, sync

DAY = "2026-11-05"


class FakeSocket:
    """The server's side of one WebSocket (`live.serve`), driven by the test."""

    def __init__(self, ctx: AppContext, cid: str, query: str, *, reading: bool = True) -> None:
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.incoming.put_nowait({"type": "websocket.connect"})
        self.sent: list[dict[str, Any]] = []
        self.reading = asyncio.Event()
        if reading:
            self.reading.set()
        self.aborted = False
        scope = {
            "type": "websocket",
            "path": f"/ws/leaderboard/{cid}",
            "query_string": query.encode(),
            "headers": [],
            "subprotocols": [],
            "extensions": {live.ABORT: self._abort},
        }
        self.task = asyncio.get_running_loop().create_task(
            live.serve(ctx, scope, self.incoming.get, self._send)
        )

    async def _send(self, message: dict[str, Any]) -> None:
        await self.reading.wait()  # a client that stopped reading holds the send here
        self.sent.append(message)
        if message["type"] == "websocket.close":  # as the server does
            self.incoming.put_nowait({"type": "websocket.disconnect", "code": message["code"]})

    def _abort(self) -> None:
        self.aborted = True
        self.incoming.put_nowait({"type": "websocket.disconnect", "code": 1006})

    @property
    def frames(self) -> list[dict[str, Any]]:
        return [orjson.loads(m["text"]) for m in self.sent if m["type"] == "websocket.send"]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == kind]

    @property
    def close_code(self) -> int | None:
        return next((m["code"] for m in self.sent if m["type"] == "websocket.close"), None)

    async def until(self, check: Callable[[], bool], within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while not check():
            if time.monotonic() > deadline:
                seen = [(f["type"], f.get("event_id")) for f in self.frames[-12:]]
                raise AssertionError(f"timed out; last frames {seen}, close {self.close_code}")
            await asyncio.sleep(0.01)

    async def send_text(self, text: str) -> None:
        await self.incoming.put({"type": "websocket.receive", "text": text})

    async def disconnect(self) -> None:
        await self.incoming.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self.task, 5)


@pytest.fixture
async def live_app(
    tmp_path: Path, redis_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    overrides = getattr(request, "param", {})
    settings = make_settings(
        tmp_path,
        redis_url,
        ws_heartbeat_seconds=0.2,
        ws_update_interval_ms=50,
        **overrides,
    )
    async with running_app(settings) as pair:
        yield pair


def ctx_of(app: FastAPI) -> AppContext:
    ctx: AppContext = app.state.ctx
    return ctx


async def opened(ctx: AppContext, cid: str, user: str, query: str = "") -> FakeSocket:
    """A connection of `user`, once its `connected` frame and snapshot are in."""
    sock = FakeSocket(ctx, cid, f"token={token(user)}" + (f"&{query}" if query else ""))
    await sock.until(lambda: len(sock.frames) >= 2)
    return sock


def score_ids(sock: FakeSocket) -> list[int]:
    return [f["event_id"] for f in sock.of("score_update")]


@pytest.mark.parametrize("live_app", [{"ws_max_lag": 8}], indirect=True)
async def test_a_client_far_behind_gets_a_snapshot_instead_of_the_backlog(
    live_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = live_app
    ctx = ctx_of(app)
    await create_comp(client, "lag")
    users = [f"u{i}" for i in range(30)]
    await join(client, "lag", *users)
    sock = await opened(ctx, "lag", "u0")
    sock.reading.clear()  # stops reading
    for i, user in enumerate(users):
        await sync(client, user, rec(DAY, 100 + i))
    sock.reading.set()
    last = (await client.get(f"{API}/leaderboard/lag", headers=auth("org"))).json()["data"]
    await sock.until(lambda: any(f.get("event_id") == last["event_id"] for f in sock.frames))
    resyncs = [f for f in sock.of("leaderboard_update") if f["resync"]]
    assert resyncs, [f["type"] for f in sock.frames]
    # After the snapshot, the events that follow it, each once and in order.
    snap = resyncs[0]
    after = [i for i in score_ids(sock) if i > snap["event_id"]]
    assert after == list(range(snap["event_id"] + 1, last["event_id"] + 1))
    assert snap["me"]["user_id"] == "u0"
    await sock.disconnect()


@pytest.mark.parametrize("live_app", [{"ws_send_timeout_seconds": 0.3}], indirect=True)
async def test_a_send_that_stands_still_closes_the_client_and_spares_the_others(
    live_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = live_app
    ctx = ctx_of(app)
    await create_comp(client, "stuck")
    await join(client, "stuck", "alice", "bob")
    stuck = await opened(ctx, "stuck", "alice")
    fine = await opened(ctx, "stuck", "bob")
    stuck.reading.clear()
    await sync(client, "bob", rec(DAY, 500))
    await fine.until(lambda: len(fine.of("score_update")) == 1, within=1)
    # The stuck send is given up after the timeout; its close frame cannot be sent
    # either, so the connection is cut.
    await asyncio.wait_for(stuck.task, 5)
    assert stuck.aborted
    await sync(client, "bob", rec(DAY, 600))
    await fine.until(lambda: len(fine.of("score_update")) == 2, within=1)
    await fine.disconnect()


async def test_events_lost_on_a_dropped_link_are_filled_from_the_stream(
    live_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = live_app
    ctx = ctx_of(app)
    await create_comp(client, "gap")
    await join(client, "gap", "alice", "bob")
    sock = await opened(ctx, "gap", "alice")
    first = sock.frames[0]["event_id"]
    hub = ctx.services["hub"]
    assert isinstance(hub, Hub)
    for i in range(20):
        if i == 5:
            # Drop the pub/sub connection: what is published meanwhile is lost.
            for link in hub.links.values():
                assert link.conn is not None
                await link.conn.disconnect()
        await sync(client, "bob" if i % 2 else "alice", rec(DAY, 100 + i))
    await sock.until(lambda: len(sock.of("score_update")) == 20)
    assert score_ids(sock) == list(range(first + 1, first + 21))
    await sock.disconnect()


async def test_a_board_subscribed_as_its_link_dies_is_subscribed_by_the_reconnect(
    live_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """A second board's subscription sent on the link's connection just as it died (its
    reader has not seen it yet): it waits for the reconnect, which subscribes it with
    the rest. Before, the send's ConnectionError failed the join, and the client was
    told to come back later (1013); a cluster test met it in CI."""
    app, client = live_app
    ctx = ctx_of(app)
    await create_comp(client, "cut1")
    await join(client, "cut1", "alice")
    first = await opened(ctx, "cut1", "alice")
    hub = ctx.services["hub"]
    assert isinstance(hub, Hub)
    (link,) = hub.links.values()
    # A second board served by the same link (in a cluster: on the same node).
    other = "cut2"
    for i in itertools.count():
        other = f"cut2x{i}"
        if await hub._link_for(reads.events_channel(ctx, other)) is link:
            break
    await create_comp(client, other)
    await join(client, other, "alice")
    assert link.conn is not None
    # The socket is gone at once; the reader learns it on its next turn of the loop.
    link.conn._writer.transport.abort()  # type: ignore[attr-defined]
    await asyncio.wait_for(link.subscribe(reads.events_channel(ctx, other)), 5)
    second = await opened(ctx, other, "alice")
    await sync(client, "alice", rec(DAY, 700))
    await first.until(lambda: len(first.of("score_update")) == 1)
    await second.until(lambda: len(second.of("score_update")) == 1)
    assert first.close_code is None and second.close_code is None
    await first.disconnect()
    await second.disconnect()


async def test_a_competition_without_local_clients_costs_nothing(
    live_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = live_app
    ctx = ctx_of(app)
    await create_comp(client, "idle")
    await join(client, "idle", "alice")
    channel = reads.events_channel(ctx, "idle")
    sock = await opened(ctx, "idle", "alice")
    hub = ctx.services["hub"]
    assert isinstance(hub, Hub)
    assert set(hub.rooms) == {"idle"}
    assert await _subscribers(ctx, channel) == 1
    await sock.disconnect()
    assert hub.rooms == {} and hub.connections == 0
    await asyncio.sleep(0.1)
    assert await _subscribers(ctx, channel) == 0


async def _subscribers(ctx: AppContext, channel: str) -> int:
    """Subscribers of the board's channel, classic or shard (Redis 7 and newer)."""
    total = 0
    for kind in ("NUMSUB", "SHARDNUMSUB"):
        options = {}
        if ctx.redis.mode == "cluster":
            options["target_nodes"] = ctx.r.get_node_from_key(channel)
        try:
            reply = await ctx.r.execute_command("PUBSUB", kind, channel, **options)
        except ResponseError:  # no SHARDNUMSUB before Redis 7
            continue
        total += int(reply[1])
    return total


async def test_every_path_reaches_the_socket_and_access_is_kept(
    live_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = live_app
    ctx = ctx_of(app)
    await create_comp(client, "paths", visibility="public")
    await join(client, "paths", "alice", "bob")
    bob = await opened(ctx, "paths", "bob")
    stranger = await opened(ctx, "paths", "stranger")
    # A trusted write (the service role) is a score_update caused by "write".
    body = {
        "user_id": "alice",
        "competition_id": "paths",
        "steps": 7000,
        "distance": 0,
        "calories": 0,
    }
    resp = await client.post(f"{API}/leaderboard/update", json=body, headers=SERVICE_AUTH)
    assert resp.status_code == 200, resp.text
    await bob.until(lambda: len(bob.of("score_update")) == 1)
    assert bob.of("score_update")[0]["cause"] == "write"
    await bob.until(lambda: bool(bob.of("rank_change")))
    assert bob.of("rank_change")[0]["overtaken_by"] == ["alice"]
    # Turned private by its organizer: the stranger's access ends (checked at the
    # heartbeat); the participant stays.
    resp = await client.patch(
        f"{API}/competitions/paths", json={"visibility": "private"}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    await asyncio.wait_for(stranger.task, 3)
    assert stranger.close_code == 1008
    assert stranger.of("error")[-1]["error"] == "competition_not_found"
    # Bob leaves the private board: the event, then his own connection closes.
    resp = await client.post(f"{API}/competitions/paths/leave", headers=auth("bob"))
    assert resp.status_code == 200, resp.text
    await asyncio.wait_for(bob.task, 3)
    assert bob.of("participant_left")[0]["user_id"] == "bob"
    assert bob.close_code == 1008
    # The organizer sees the cancellation.
    org = await opened(ctx, "paths", "org")
    resp = await client.post(
        f"{API}/competitions/paths/cancel", json={"reason": "rain"}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    await org.until(lambda: bool(org.of("competition_cancelled")))
    await org.disconnect()


async def test_frames_from_the_client(live_app: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = live_app
    ctx = ctx_of(app)
    await create_comp(client, "talk")
    await join(client, "talk", "alice")
    sock = await opened(ctx, "talk", "alice")
    await sock.send_text('{"type":"ping"}')
    await sock.until(lambda: bool(sock.of("pong")))
    await sock.incoming.put({"type": "websocket.receive", "bytes": b"\x01"})
    await sock.send_text('{"type": 5}')
    await sock.until(lambda: len(sock.of("error")) == 2)
    assert [e["error"] for e in sock.of("error")] == ["bad_frame", "bad_frame"]
    await sock.until(lambda: len(sock.of("heartbeat")) >= 1, within=2)
    assert sock.close_code is None
    await sock.disconnect()


@pytest.mark.parametrize("live_app", [{"rate_limit_ip_per_minute": 3}], indirect=True)
async def test_failed_tokens_count_against_the_address(
    live_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = live_app
    ctx = ctx_of(app)
    await create_comp(client, "guess")
    codes, errors = [], []
    for _ in range(6):
        sock = FakeSocket(ctx, "guess", "token=forged")
        await asyncio.wait_for(sock.task, 5)
        codes.append(sock.close_code)
        errors.append(sock.of("error")[0]["error"])
    assert codes[:3] == [1008] * 3 and errors[:3] == ["unauthorized"] * 3
    assert codes[-1] == 1013 and errors[-1] == "rate_limited"


@pytest.mark.parametrize("live_app", [{"ws_max_connections": 1}], indirect=True)
async def test_a_process_holds_at_most_its_connections(
    live_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = live_app
    ctx = ctx_of(app)
    await create_comp(client, "full", visibility="public")
    first = await opened(ctx, "full", "alice")
    second = FakeSocket(ctx, "full", f"token={token('bob')}")
    await asyncio.wait_for(second.task, 5)
    assert second.close_code == 1013
    assert second.of("error")[0]["error"] == "too_many_connections"
    assert second.of("error")[0]["code"] == 503
    await first.disconnect()
    third = await opened(ctx, "full", "bob")
    await third.disconnect()


async def test_a_resume_brings_the_missed_personal_rank_changes(
    live_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = live_app
    ctx = ctx_of(app)
    await create_comp(client, "again")
    await join(client, "again", "alice", "bob", "zoe")
    await sync(client, "zoe", rec(DAY, 500))
    # Alice keeps the room open in this process the whole time.
    alice = await opened(ctx, "again", "alice")
    zoe = await opened(ctx, "again", "zoe")
    since = zoe.frames[0]["event_id"]
    await zoe.disconnect()
    await sync(client, "bob", rec(DAY, 900))  # passes zoe while she is away
    await alice.until(lambda: len(alice.of("score_update")) == 1)
    zoe = await opened(ctx, "again", "zoe", f"since={since}")
    await zoe.until(lambda: bool(zoe.of("rank_change")))
    change = zoe.of("rank_change")[0]
    assert change["user_id"] == "zoe" and change["overtaken_by"] == ["bob"]
    assert (change["rank"], change["previous_rank"]) == (2, 1)
    assert zoe.frames[0]["resumed"] is True
    await zoe.disconnect()
    await alice.disconnect()


async def test_a_rule_edit_and_its_recount_reach_the_socket(
    live_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = live_app
    ctx = ctx_of(app)
    # Starts later this month: its scoring rules may still change.
    await create_comp(client, "later", start_date="2026-11-20", end_date="2026-11-30")
    await join(client, "later", "alice")
    sock = await opened(ctx, "later", "alice")
    resp = await client.patch(
        f"{API}/competitions/later", json={"metric": "distance"}, headers=auth("org")
    )
    assert resp.status_code == 200, resp.text
    await sock.until(lambda: bool(sock.of("recount_finished")))
    rules = sock.of("rules_changed")
    assert len(rules) == 1 and rules[0]["recount"] == 1
    assert rules[0]["event_id"] < sock.of("recount_finished")[0]["event_id"]
    await sock.disconnect()
