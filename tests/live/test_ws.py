"""The live leaderboard over WebSocket (SPEC §7), against real service processes.

Two `healthcomp serve` processes share the test's Redis (whichever backend the run
uses: the embedded 6.2 server, the external Redis 7, the six-node cluster), so every
test crosses processes: it writes through A and watches through B, as clients behind a
load balancer would.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from healthcomp.core.auth import SERVICE, mint_token
from healthcomp.core.redis import create_client
from tests.cluster import _command, start_cluster, system_redis7
from tests.conftest import BACKEND, TEST_SECRET, make_settings, token
from tests.live.support import (
    Service,
    Watcher,
    bearer,
    open_competition,
    services,
    sync,
    today,
    watch,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ENV = {
    "HC_JWT_LEEWAY": "0",
    "HC_WS_HEARTBEAT_SECONDS": "1",
    "HC_WS_SEND_TIMEOUT_SECONDS": "1",
    "HC_WS_MAX_LAG": "64",
}


def new_id() -> str:
    return "c" + uuid.uuid4().hex[:10]


async def closed_with(url: str, **kw: Any) -> tuple[int, list[dict[str, Any]]]:
    """Connect, read until the server closes; its close code and the frames before."""
    received: list[dict[str, Any]] = []
    async with connect(url, **kw) as ws:
        try:
            async for raw in ws:
                received.append(orjson.loads(raw))
        except ConnectionClosed:
            pass
        assert ws.close_code is not None
        return ws.close_code, received


# --- connecting -------------------------------------------------------------------


async def test_a_sync_on_one_process_reaches_a_client_of_another_within_a_second(
    pair: list[Service], http: httpx.AsyncClient
) -> None:
    b = pair[1]
    cid = new_id()
    await open_competition(http, cid, "org", "alice", "bob")
    watcher = await watch(b.ws_url(cid, token=token("alice")))
    frames = await watcher.until(lambda f: len(f) >= 2)
    assert frames[0]["type"] == "connected"
    assert frames[0]["heartbeat_seconds"] == 1.0 and frames[0]["user_id"] == "alice"
    snapshot = frames[1]
    assert snapshot["type"] == "leaderboard_update" and snapshot["snapshot"] is True
    assert snapshot["me"]["user_id"] == "alice" and snapshot["total_count"] == 2
    assert snapshot["event_id"] == frames[0]["event_id"]

    sent = time.monotonic()
    await sync(http, "bob", 4321)
    await watcher.until(lambda f: any(x["type"] == "score_update" for x in f), within=1.0)
    update = watcher.of("score_update")[0]
    assert watcher.arrived[watcher.frames.index(update)] - sent < 1.0
    assert update["user_id"] == "bob" and update["score"] == 4321 and update["rank"] == 1
    assert update["previous_rank"] == 1 and update["event_id"] == snapshot["event_id"] + 1
    assert update["cause"] == "sync" and update["timestamp"].endswith("Z")
    # alice was overtaken: her own rank_change; the coalesced board follows.
    await watcher.until(lambda f: any(x["type"] == "rank_change" for x in f))
    change = watcher.of("rank_change")[0]
    assert change["user_id"] == "alice" and change["overtaken_by"] == ["bob"]
    assert (change["rank"], change["previous_rank"]) == (2, 1)
    await watcher.until(lambda f: len(watcher.of("leaderboard_update")) >= 2)
    board = watcher.of("leaderboard_update")[-1]
    assert board["snapshot"] is False and "me" not in board
    assert [e["user_id"] for e in board["entries"]] == ["bob", "alice"]
    await watcher.close()


async def test_token_in_the_subprotocol_and_limit(
    pair: list[Service], http: httpx.AsyncClient
) -> None:
    cid = new_id()
    users = [f"u{i}" for i in range(5)]
    await open_competition(http, cid, "org", *users)
    ws = await connect(pair[1].ws_url(cid, limit=3), subprotocols=["bearer", token("u4")])  # type: ignore[list-item]
    assert ws.subprotocol == "bearer"
    watcher = Watcher(ws)
    frames = await watcher.until(lambda f: len(f) >= 2)
    assert frames[0]["limit"] == 3
    assert len(frames[1]["entries"]) == 3 and frames[1]["me"]["user_id"] == "u4"
    await watcher.close()
    # A refusal is accepted with the offered subprotocol too, so a browser reads why.
    async with connect(
        pair[1].ws_url(cid, limit=101),
        subprotocols=["bearer", token("u4")],  # type: ignore[list-item]
    ) as ws:
        assert ws.subprotocol == "bearer"
        assert orjson.loads(await ws.recv())["error"] == "validation_error"
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1008


async def test_public_board_is_open_to_any_user_and_private_is_not(
    pair: list[Service], http: httpx.AsyncClient
) -> None:
    public, private = new_id(), new_id()
    await open_competition(http, public, "org", "alice", visibility="public")
    await open_competition(http, private, "org", "alice")
    watcher = await watch(pair[1].ws_url(public, token=token("stranger")))
    frames = await watcher.until(lambda f: len(f) >= 2)
    assert frames[1]["me"] is None
    await watcher.close()
    # The organizer and the service role see a private board; a stranger gets the 404.
    for who in (token("org"), mint_token(TEST_SECRET, user_id=None, role=SERVICE)):
        watcher = await watch(pair[1].ws_url(private, token=who))
        await watcher.until(lambda f: len(f) >= 2)
        await watcher.close()
    code, frames = await closed_with(pair[1].ws_url(private, token=token("stranger")))
    assert code == 1008
    assert frames == [
        {
            "type": "error",
            "error": "competition_not_found",
            "message": frames[0]["message"],
            "code": 404,
        }
    ]


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({}, "unauthorized"),
        ({"token": "not-a-jwt"}, "unauthorized"),
        ({"token": "TOKEN:anon"}, "unauthorized"),
        ({"token": "TOKEN:expired"}, "unauthorized"),
        ({"token": "TOKEN:alice", "limit": "0"}, "validation_error"),
        ({"token": "TOKEN:alice", "limit": "101"}, "validation_error"),
        ({"token": "TOKEN:alice", "since": "-1"}, "validation_error"),
        ({"token": "TOKEN:alice", "since": "x"}, "validation_error"),
    ],
)
async def test_refusals_close_with_1008_and_say_why(
    pair: list[Service], http: httpx.AsyncClient, query: dict[str, str], error: str
) -> None:
    cid = new_id()
    await open_competition(http, cid, "org", "alice")
    tokens = {
        "TOKEN:alice": token("alice"),
        "TOKEN:anon": mint_token(TEST_SECRET, user_id=None, role="anon"),
        "TOKEN:expired": token("alice", ttl_seconds=-60),
    }
    query = {k: tokens.get(v, v) for k, v in query.items()}
    code, frames = await closed_with(pair[1].ws_url(cid, **query))
    assert code == 1008
    assert len(frames) == 1 and frames[0]["type"] == "error" and frames[0]["error"] == error


async def test_unknown_competition_and_bad_ids_close_with_1008(pair: list[Service]) -> None:
    code, frames = await closed_with(pair[1].ws_url("nope-" + new_id(), token=token("alice")))
    assert (code, frames[0]["error"], frames[0]["code"]) == (1008, "competition_not_found", 404)
    code, frames = await closed_with(pair[1].ws_url("bad%3Aid", token=token("alice")))
    assert (code, frames[0]["error"]) == (1008, "validation_error")


async def test_a_token_expiring_while_connected_closes_with_1008(
    pair: list[Service], http: httpx.AsyncClient
) -> None:
    cid = new_id()
    await open_competition(http, cid, "org", "alice")
    started = time.monotonic()
    code, frames = await closed_with(pair[1].ws_url(cid, token=token("alice", ttl_seconds=2)))
    assert code == 1008
    assert 1.0 <= time.monotonic() - started < 6.0
    assert frames[0]["type"] == "connected"


# --- the client's frames ------------------------------------------------------------


async def test_ping_pong_bad_frames_and_heartbeats(
    pair: list[Service], http: httpx.AsyncClient
) -> None:
    cid = new_id()
    await open_competition(http, cid, "org", "alice")
    watcher = await watch(pair[1].ws_url(cid, token=token("alice")))
    await watcher.until(lambda f: len(f) >= 2)
    await watcher.ws.send('{"type":"ping"}')
    await watcher.until(lambda f: any(x["type"] == "pong" for x in f))
    for bad in ("not json", "[1, 2]", '{"no":"type"}', '{"type":"dance"}', "x" * 5000):
        await watcher.ws.send(bad)
    await watcher.ws.send(b"\x00binary")
    await watcher.until(lambda f: len(watcher.of("error")) >= 6)
    assert {e["error"] for e in watcher.of("error")} == {"bad_frame", "unknown_type"}
    # The connection stays, and the server's heartbeats (every second here) arrive.
    await watcher.until(lambda f: len(watcher.of("heartbeat")) >= 2, within=4)
    await watcher.ws.send('{"type":"ping"}')
    await watcher.until(lambda f: len(watcher.of("pong")) >= 2)
    await watcher.close()


# --- resuming ---------------------------------------------------------------------


async def test_resume_with_since_delivers_exactly_the_missed_events(
    pair: list[Service], http: httpx.AsyncClient
) -> None:
    a, b = pair
    cid = new_id()
    await open_competition(http, cid, "org", "alice", "bob")
    watcher = await watch(b.ws_url(cid, token=token("alice")))
    await sync(http, "alice", 100)
    await watcher.until(lambda f: len(watcher.of("score_update")) == 1)
    last = watcher.of("score_update")[-1]["event_id"]
    await watcher.close()
    for steps in (200, 300, 400):
        await sync(http, "bob", steps)
    await sync(http, "alice", 500)
    # The REST board gives an event id too; nothing is lost between it and `since`.
    resp = await http.get(f"/api/v1/leaderboard/{cid}", headers=bearer("alice"))
    rest_event = resp.json()["data"]["event_id"]
    assert rest_event == last + 4
    await sync(http, "bob", 600)

    watcher = await watch(a.ws_url(cid, token=token("alice"), since=last))
    await watcher.until(lambda f: len(watcher.of("score_update")) == 5)
    assert watcher.frames[0]["type"] == "connected" and watcher.frames[0]["resumed"] is True
    updates = watcher.of("score_update")
    assert [u["event_id"] for u in updates] == list(range(last + 1, last + 6))
    assert [(u["user_id"], u["score"]) for u in updates] == [
        ("bob", 200), ("bob", 300), ("bob", 400), ("alice", 500), ("bob", 600),
    ]  # fmt: skip
    assert not [f for f in watcher.frames if f["type"] == "leaderboard_update" and f["snapshot"]]
    await watcher.close()

    watcher = await watch(b.ws_url(cid, token=token("bob"), since=rest_event))
    await watcher.until(lambda f: len(watcher.of("score_update")) == 1)
    assert watcher.of("score_update")[0]["event_id"] == rest_event + 1
    await watcher.close()


async def test_a_burst_is_coalesced_and_the_last_board_equals_rest_then_since_expires(
    pair: list[Service], http: httpx.AsyncClient, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    a, b = pair
    cid = new_id()
    users = [f"r{i}" for i in range(40)]
    await open_competition(http, cid, "org", *users)
    first = (await http.get(f"/api/v1/leaderboard/{cid}", headers=bearer("org"))).json()
    first_event = first["data"]["event_id"]
    watcher = await watch(b.ws_url(cid, token=token("r0")))
    await watcher.until(lambda f: len(f) >= 2)

    # 1,200 syncs as fast as the service takes them (about one second here).
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=a.base, timeout=30, limits=limits) as fast:
        tokens = {u: bearer(u) for u in users}
        sem = asyncio.Semaphore(64)

        async def one(i: int) -> None:
            user = users[i % len(users)]
            async with sem:
                resp = await fast.post(
                    "/api/v1/fitness/sync",
                    json={"date": today(), "steps": 1000 + i, "source": "phone"},
                    headers=tokens[user],
                )
                assert resp.status_code == 200, resp.text

        started = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(1200)))
        elapsed = time.monotonic() - started

    # Concurrent syncs of one user may collapse (a newer value applied first makes
    # the older one a no-op), so the board, not the count, says where it ended.
    after = (await http.get(f"/api/v1/leaderboard/{cid}", headers=bearer("org"))).json()
    last_event = after["data"]["event_id"]
    assert last_event > first_event + 1100
    await watcher.until(
        lambda f: (
            any(x.get("event_id") == last_event and x["type"] == "score_update" for x in f)
            or any(x["type"] == "leaderboard_update" and x["resync"] for x in f)
        ),
        within=10,
    )
    await asyncio.sleep(0.6)  # the last coalesced board
    boards = [f for f in watcher.of("leaderboard_update") if not f["snapshot"]]
    # At most one per 250 ms (plus the first, which goes at once, and the last).
    assert 1 <= len(boards) <= elapsed / 0.25 + 3, (len(boards), elapsed)
    # Every event once, in order, or a snapshot where this client fell behind.
    ids = [f["event_id"] for f in watcher.frames if f["type"] == "score_update"]
    assert ids == sorted(set(ids))
    rest = (await http.get(f"/api/v1/leaderboard/{cid}?limit=10", headers=bearer("r0"))).json()
    final = boards[-1]
    assert final["event_id"] == rest["data"]["event_id"] == last_event
    assert final["entries"] == rest["data"]["entries"]
    assert final["total_count"] == rest["data"]["total_count"]
    await watcher.close()

    # The stream keeps about 1,000 events: the first of this board are gone, and a
    # resume from there gets a fresh snapshot marked resync.
    client = create_client(redis_url, make_settings(tmp_path, redis_url))
    oldest = await client.xrange(f"{prefix}:{{c:{cid}}}:ev", count=1)
    await client.aclose()
    assert int(oldest[0][0].split("-")[0]) > first_event + 1
    watcher = await watch(a.ws_url(cid, token=token("r1"), since=first_event))
    frames = await watcher.until(lambda f: len(f) >= 2)
    assert frames[0]["resumed"] is False
    assert frames[1]["type"] == "leaderboard_update" and frames[1]["resync"] is True
    assert frames[1]["snapshot"] is True and frames[1]["event_id"] == last_event
    await watcher.close()


# --- slow clients -----------------------------------------------------------------


def _stalled_socket(service: Service, cid: str, user: str) -> socket.socket:
    """A WebSocket handshake by hand, then never a byte read: a client that stopped
    reading, with the smallest receive buffer the kernel allows."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(("127.0.0.1", service.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws/leaderboard/{cid}?limit=100&token={token(user)} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{service.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    return sock


async def test_a_client_that_stops_reading_does_not_delay_the_others(
    pair: list[Service], http: httpx.AsyncClient
) -> None:
    b = pair[1]
    cid = new_id()
    users = [f"s{i}" for i in range(100)]
    await open_competition(http, cid, "org", *users, visibility="public")
    stalled = [_stalled_socket(b, cid, f"stall{i}") for i in range(3)]
    watcher = await watch(b.ws_url(cid, token=token("s0"), limit=100))
    await watcher.until(lambda f: len(f) >= 2)
    try:
        # Enough traffic to fill a stalled socket's buffers many times over: each
        # event is a frame, and each coalesced board of 100 entries some 30 KB.
        lags: list[float] = []
        for round_ in range(12):
            target = len(watcher.of("score_update")) + 40
            sent = time.monotonic()
            await asyncio.gather(
                *(sync(http, u, 2000 + round_ * 100 + i) for i, u in enumerate(users[:40]))
            )
            await watcher.until(lambda f, t=target: len(watcher.of("score_update")) >= t, within=5)
            lags.append(time.monotonic() - sent)
            await asyncio.sleep(0.3)
        assert max(lags) < 1.5, lags
        # The stalled ones were cut loose once a send stood still for a second.
        await asyncio.sleep(2.5)
        for sock in stalled:
            sock.setblocking(False)
            sock.settimeout(5)
            data = b""
            while True:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
            assert data.startswith(b"HTTP/1.1 101")
    finally:
        for sock in stalled:
            sock.close()
        await watcher.close()


async def test_a_peer_that_never_answers_pings_is_dropped(
    pair: list[Service], http: httpx.AsyncClient
) -> None:
    """It reads everything (so no send stalls) but answers no protocol ping: gone after
    a heartbeat (one second here) and the ping's timeout, closed with 1011."""
    cid = new_id()
    await open_competition(http, cid, "org", "alice")
    sock = _stalled_socket(pair[1], cid, "alice")
    sock.settimeout(0.5)
    received = b""
    deadline = time.monotonic() + 8
    closed = False
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            closed = True
            break
        received += chunk
    sock.close()
    assert closed, "still open"
    # The server's ping (opcode 0x89, unanswered) came before its close (0x88, 1011).
    assert b"\x89" in received
    close_at = received.rfind(b"\x88")
    assert close_at > received.find(b"\x89") > 0, received[-40:]
    assert received[close_at + 2 : close_at + 4] == (1011).to_bytes(2, "big")


# --- shutdown -----------------------------------------------------------------------


async def test_shutdown_closes_with_1001(redis_url: str, prefix: str, tmp_path: Path) -> None:
    with services(redis_url, prefix, tmp_path, 1, **ENV) as (service,):
        async with httpx.AsyncClient(base_url=service.base) as http:
            cid = new_id()
            await open_competition(http, cid, "org", "alice")
        watcher = await watch(service.ws_url(cid, token=token("alice")))
        await watcher.until(lambda f: len(f) >= 2)
        service.terminate()
        await asyncio.wait_for(watcher.ws.wait_closed(), 10)
        assert watcher.ws.close_code == 1001


# --- a Redis 7 cluster: sharded pub/sub ------------------------------------------------


@pytest.mark.skipif(system_redis7() is None, reason="no Redis 7 redis-server on this machine")
@pytest.mark.skipif(BACKEND != "embedded", reason="starts its own cluster: run once")
async def test_on_a_redis7_cluster_events_go_by_sharded_pubsub(tmp_path: Path) -> None:
    binary = system_redis7()
    assert binary is not None
    proc, port = start_cluster(tmp_path / "cluster7", binary)
    try:
        url = f"redis+cluster://127.0.0.1:{port}"
        with services(url, "w7", tmp_path, 2) as (a, b):
            async with httpx.AsyncClient(base_url=a.base, timeout=10) as http:
                cid = new_id()
                await open_competition(http, cid, "org", "alice", "bob")
                watcher = await watch(b.ws_url(cid, token=token("alice")))
                await watcher.until(lambda f: len(f) >= 2)
                # B holds a shard-channel subscription, not a classic one.
                channel = f"w7:{{c:{cid}}}:ev"
                assert _command(port, "PUBSUB", "SHARDCHANNELS").count(channel.encode()) == 1
                assert channel.encode() not in _command(port, "PUBSUB", "CHANNELS")
                sent = time.monotonic()
                await sync(http, "bob", 999)
                await watcher.until(lambda f: bool(watcher.of("score_update")), within=1.0)
                assert time.monotonic() - sent < 1.0
                assert watcher.of("score_update")[0]["score"] == 999
                await watcher.close()
    finally:
        proc.terminate()
        proc.wait(10)
