"""Leaderboard pages kept per worker (leaderboard/pages.py) never show less than the
uncached read would (SPEC §6.2: a read reflects every write acknowledged before it began,
on whichever process serves it).

Two app instances share one Redis: process B has the board cached, process A takes the
writes (a sync, a join, a leave, a rename, a trusted write, a visibility edit), and B's
next read shows them, with a higher `event_id`. Every caller (an outsider, a participant,
the organizer, the service role) gets from a warm cache exactly the body a fresh
instance's first read gives, windows around a user included. Under concurrent reads and
writes no read shows an `event_id` below one acknowledged before it started.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from healthcomp.core.context import AppContext
from healthcomp.core.settings import Settings
from healthcomp.engine import reads
from healthcomp.engine.model import BoardState
from healthcomp.leaderboard.service import pages_of
from tests.conftest import SERVICE_AUTH, assert_error, auth, make_settings
from tests.core.support import running_app
from tests.domain.helpers import API, board, create_comp, join, rec, sync

Answer = tuple[int, Any]


@dataclass
class Proc:
    """One app instance (a worker process) and its client."""

    app: FastAPI
    client: httpx.AsyncClient

    @property
    def ctx(self) -> AppContext:
        ctx: AppContext = self.app.state.ctx
        return ctx

    def cached_version(self, cid: str) -> int | None:
        """The board version this worker keeps pages of, if any."""
        known = pages_of(self.ctx).boards.get(cid)
        return None if known is None else known.version


def settings_for(tmp_path: Path, redis_url: str) -> Settings:
    # Many reads by one user in a burst: no rate limit in the way.
    return make_settings(
        tmp_path, redis_url, rate_limit_user_per_minute=0, rate_limit_ip_per_minute=0
    )


@asynccontextmanager
async def two_procs(settings: Settings) -> AsyncIterator[tuple[Proc, Proc]]:
    """A takes the writes, B serves the cached reads; both on the same Redis and prefix."""
    async with (
        running_app(settings) as (a_app, a_client),
        running_app(settings, keep_keys=True) as (b_app, b_client),
    ):
        yield Proc(a_app, a_client), Proc(b_app, b_client)


def headers_of(viewer: str | None) -> dict[str, str]:
    return SERVICE_AUTH if viewer is None else auth(viewer)


async def get(
    client: httpx.AsyncClient, url: str, viewer: str | None, params: dict[str, Any] | None = None
) -> Answer:
    resp = await client.get(url, params=params or {}, headers=headers_of(viewer))
    return resp.status_code, resp.json()


async def warm(
    proc: Proc, url: str, viewer: str | None, params: dict[str, Any] | None = None
) -> Answer:
    """Read twice; the second answer comes from what the first kept."""
    first = await get(proc.client, url, viewer, params)
    second = await get(proc.client, url, viewer, params)
    assert second == first
    return second


async def uncached(
    settings: Settings, url: str, viewer: str | None, params: dict[str, Any] | None = None
) -> Answer:
    """The first read of a fresh instance: nothing kept yet."""
    async with running_app(settings, keep_keys=True) as (_, client):
        return await get(client, url, viewer, params)


def standings(data: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(e["user_id"], e["rank"], e["score"]) for e in data["entries"]]


def board_url(cid: str) -> str:
    return f"{API}/leaderboard/{cid}"


# --- (a) read-your-writes across processes ---------------------------------------------------


async def test_every_kind_of_write_on_one_process_shows_on_the_other(
    tmp_path: Path, redis_url: str
) -> None:
    settings = settings_for(tmp_path, redis_url)
    async with two_procs(settings) as (a, b):
        await create_comp(a.client, "c")
        await join(a.client, "c", "u1", "u2")
        url = board_url("c")

        async def after(write: Awaitable[Any]) -> dict[str, Any]:
            """B's board (as u1) cached, then `write` on A, then B's board again."""
            status, before = await warm(b, url, "u1")
            assert status == 200
            assert b.cached_version("c") == before["data"]["event_id"]
            await write
            status, now = await get(b.client, url, "u1")
            assert status == 200, now
            assert now["data"]["event_id"] > before["data"]["event_id"]
            assert (status, now) == await uncached(settings, url, "u1")
            data: dict[str, Any] = now["data"]
            return data

        data = await after(sync(a.client, "u2", rec("2026-11-03", 500)))
        assert standings(data) == [("u2", 1, 500), ("u1", 2, 0)]
        assert data["me"]["rank"] == 2

        data = await after(join(a.client, "c", "u3"))
        assert [e["user_id"] for e in data["entries"]] == ["u2", "u1", "u3"]
        assert data["total_count"] == 3

        leave = a.client.post(f"{API}/competitions/c/leave", headers=auth("u3"))
        data = await after(leave)
        assert [e["user_id"] for e in data["entries"]] == ["u2", "u1"]
        assert data["total_count"] == 2

        rename = a.client.put(
            f"{API}/users/me/profile", json={"display_name": "Speedy"}, headers=auth("u2")
        )
        data = await after(rename)
        assert data["entries"][0]["user_name"] == "Speedy"

        write = a.client.post(
            f"{API}/leaderboard/update",
            json={"user_id": "u1", "competition_id": "c", "steps": 900},
            headers=SERVICE_AUTH,
        )
        status, before = await warm(b, url, "u1")
        resp = await write
        assert resp.status_code == 200, resp.text
        written = resp.json()["data"]["event_id"]
        status, now = await get(b.client, url, "u1")
        assert now["data"]["event_id"] >= written > before["data"]["event_id"]
        assert standings(now["data"]) == [("u1", 1, 900), ("u2", 2, 500)]
        assert (now["data"]["me"]["rank"], now["data"]["me"]["steps"]) == (1, 900)
        assert (status, now) == await uncached(settings, url, "u1")


async def test_a_sync_shows_on_the_process_that_took_it(tmp_path: Path, redis_url: str) -> None:
    """The same holds within one worker: its own writes replace what it kept."""
    async with running_app(settings_for(tmp_path, redis_url)) as (_, client):
        await create_comp(client, "c")
        await join(client, "c", "u1", "u2")
        seen = await board(client, "c", "u1")
        for steps in (100, 200, 150):
            await sync(client, "u1", rec("2026-11-03", steps))
            data = await board(client, "c", "u1")
            assert data["event_id"] > seen["event_id"]
            assert data["me"]["score"] == steps
            seen = data


# --- (b) visibility edits take effect at once -----------------------------------------------


async def test_visibility_edits_take_effect_at_once(tmp_path: Path, redis_url: str) -> None:
    settings = settings_for(tmp_path, redis_url)
    async with two_procs(settings) as (a, b):
        await create_comp(a.client, "p", visibility="public")
        await join(a.client, "p", "u1")
        url, members = board_url("p"), f"{API}/competitions/p/participants"
        status, public = await warm(b, url, "outsider")
        assert status == 200 and public["data"]["me"] is None
        resp = await b.client.get(members, headers=auth("outsider"))
        assert_error(resp, 403, "not_participant")
        assert (await warm(b, url, "u1"))[0] == 200

        async def edit(visibility: str) -> None:
            resp = await a.client.patch(
                f"{API}/competitions/p", json={"visibility": visibility}, headers=auth("org")
            )
            assert resp.status_code == 200, resp.text

        await edit("private")
        assert_error(
            await b.client.get(url, headers=auth("outsider")), 404, "competition_not_found"
        )
        assert_error(
            await b.client.get(url, params={"around": "u1"}, headers=auth("outsider")),
            404,
            "competition_not_found",
        )
        assert_error(
            await b.client.get(members, headers=auth("outsider")), 404, "competition_not_found"
        )
        # The members still see it, from the same kept version.
        status, private = await get(b.client, url, "u1")
        assert status == 200
        assert private["data"]["event_id"] == public["data"]["event_id"]

        await edit("public")
        assert await get(b.client, url, "outsider") == (200, public)


# --- (c) a warm cache answers every caller as the uncached read does -----------------------


async def _two_boards(client: httpx.AsyncClient) -> None:
    """A private board "c" and a public one "p", four participants with scores (a tie)."""
    await create_comp(client, "c")
    await create_comp(client, "p", visibility="public")
    for cid in ("c", "p"):
        await join(client, cid, "u1", "u2", "u3", "u4")
    await sync(client, "u1", rec("2026-11-03", 300))
    await sync(client, "u2", rec("2026-11-03", 700))
    await sync(client, "u3", rec("2026-11-03", 300))


VIEWS: list[tuple[str, dict[str, Any]]] = [
    ("leaderboard", {}),
    ("leaderboard", {"limit": 2}),
    ("leaderboard", {"limit": 2, "offset": 1}),
    ("leaderboard", {"offset": 10}),
    ("leaderboard", {"around": "u3", "limit": 3}),
    ("leaderboard", {"around": "me", "limit": 1}),
    ("leaderboard", {"around": "ghost"}),
    ("participants", {"limit": 3}),
]


async def test_every_caller_gets_what_the_uncached_read_gives(
    tmp_path: Path, redis_url: str
) -> None:
    settings = settings_for(tmp_path, redis_url)
    async with two_procs(settings) as (a, b):
        await _two_boards(a.client)
        seen: set[int] = set()
        for cid in ("c", "p", "nope"):
            # A participant's reads fill B's cache first, so every other caller meets it.
            for kind, params in VIEWS:
                await warm(b, _url(kind, cid), "u1", params)
            for viewer in ("u2", "u4", "org", "outsider", None):
                for kind, params in VIEWS:
                    url = _url(kind, cid)
                    answer = await warm(b, url, viewer, params)
                    assert answer == await uncached(settings, url, viewer, params), (
                        cid,
                        viewer,
                        kind,
                        params,
                    )
                    seen.add(answer[0])
        # The matrix holds answers and refusals alike.
        assert seen == {200, 403, 404, 422}


def _url(kind: str, cid: str) -> str:
    return board_url(cid) if kind == "leaderboard" else f"{API}/competitions/{cid}/{kind}"


async def test_the_cache_keeps_refusals_to_their_caller(tmp_path: Path, redis_url: str) -> None:
    """An outsider of a private board asking after everyone else filled the cache gets
    the unknown-id 404, the same as the uncached read."""
    settings = settings_for(tmp_path, redis_url)
    async with two_procs(settings) as (_, b):
        await _two_boards(b.client)
        for viewer in ("u1", "org", None):
            assert (await warm(b, board_url("c"), viewer))[0] == 200
        for params in ({}, {"around": "u1"}, {"limit": 100}):
            resp = await b.client.get(board_url("c"), params=params, headers=auth("outsider"))
            assert_error(resp, 404, "competition_not_found")


# --- (d) windows around a user follow the user ----------------------------------------------


async def test_windows_follow_the_caller(tmp_path: Path, redis_url: str) -> None:
    settings = settings_for(tmp_path, redis_url)
    async with two_procs(settings) as (a, b):
        await create_comp(a.client, "c")
        users = [f"u{i}" for i in range(6)]
        await join(a.client, "c", *users)
        for i, user in enumerate(users):
            await sync(a.client, user, rec("2026-11-03", 1000 - 100 * i))
        url = board_url("c")

        async def window(viewer: str, around: str) -> dict[str, Any]:
            status, body = await warm(b, url, viewer, {"around": around, "limit": 3})
            assert status == 200, body
            assert (status, body) == await uncached(
                settings, url, viewer, {"around": around, "limit": 3}
            )
            data: dict[str, Any] = body["data"]
            return data

        mine = await window("u4", "me")
        assert [e["user_id"] for e in mine["entries"]] == ["u3", "u4", "u5"]
        assert mine["me"]["rank"] == 5
        theirs = await window("org", "u4")
        assert theirs["entries"] == mine["entries"]

        # u4 moves to the top (synced on A), then to the bottom.
        await sync(a.client, "u4", rec("2026-11-03", 5000))
        mine = await window("u4", "me")
        assert [e["user_id"] for e in mine["entries"]] == ["u4", "u0", "u1"]
        assert (mine["me"]["rank"], mine["me"]["score"], mine["offset"]) == (1, 5000, 0)
        theirs = await window("org", "u4")
        assert theirs["entries"] == mine["entries"] and theirs["me"] is None
        # Someone else's window moves with them too.
        assert [e["user_id"] for e in (await window("u0", "u1"))["entries"]] == ["u0", "u1", "u2"]

        await sync(a.client, "u4", rec("2026-11-03", 0))
        mine = await window("u4", "me")
        assert [e["user_id"] for e in mine["entries"]] == ["u3", "u5", "u4"]
        assert mine["me"]["rank"] == 6

        # Not on the board: refused, until they join (on A).
        for viewer in ("u1", "org"):
            resp = await b.client.get(url, params={"around": "late"}, headers=auth(viewer))
            assert_error(resp, 404, "participant_not_found")
        await join(a.client, "c", "late")
        assert "late" in [e["user_id"] for e in (await window("u1", "late"))["entries"]]
        # A participant who left is not on the board any more.
        resp = await a.client.post(f"{API}/competitions/c/leave", headers=auth("u5"))
        assert resp.status_code == 200, resp.text
        resp = await b.client.get(url, params={"around": "u5"}, headers=auth("u1"))
        assert_error(resp, 404, "participant_not_found")


# --- (e) concurrent reads never go back behind an acknowledged write --------------------------


async def test_a_read_never_rides_on_a_version_check_older_than_itself(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B's version check reads the board, then its answer is held back (a slow reply);
    meanwhile a write is acknowledged on A and a second read starts on B. The second read
    must not take the held answer: it reflects the write."""
    settings = settings_for(tmp_path, redis_url)
    async with two_procs(settings) as (a, b):
        await create_comp(a.client, "c")
        await join(a.client, "c", "u1", "u2")
        url = board_url("c")
        _, before = await warm(b, url, "u1")

        release = asyncio.Event()
        held: list[int] = []
        real = reads.board_state

        async def slow_reply(ctx: AppContext, cid: str) -> BoardState | None:
            state = await real(ctx, cid)
            if ctx is b.ctx and not release.is_set():
                held.append(state.version if state else -1)
                await release.wait()
            return state

        monkeypatch.setattr(reads, "board_state", slow_reply)
        early = asyncio.create_task(get(b.client, url, "u1"))
        for _ in range(200):
            if held:
                break
            await asyncio.sleep(0.005)
        assert held == [before["data"]["event_id"]]

        await sync(a.client, "u2", rec("2026-11-03", 500))  # acknowledged
        late = asyncio.create_task(get(b.client, url, "u1"))
        for _ in range(10):
            await asyncio.sleep(0)
        release.set()
        (_, early_body), (_, late_body) = await asyncio.wait_for(asyncio.gather(early, late), 5)
        assert early_body["data"]["event_id"] >= before["data"]["event_id"]
        assert late_body["data"]["event_id"] > before["data"]["event_id"]
        assert standings(late_body["data"])[0] == ("u2", 1, 500)


async def test_concurrent_reads_never_show_less_than_an_acknowledged_write(
    tmp_path: Path, redis_url: str
) -> None:
    settings = settings_for(tmp_path, redis_url)
    async with two_procs(settings) as (a, b):
        await create_comp(a.client, "c")
        users = [f"u{i}" for i in range(5)]
        await join(a.client, "c", *users)
        acknowledged = 0
        # (viewer, params, event_id) -> the body: one version reads the same everywhere.
        bodies: dict[tuple[str | None, str, int], dict[str, Any]] = {}

        async def write(i: int) -> None:
            nonlocal acknowledged
            user = users[i % len(users)]
            if i % 2:
                resp = await a.client.post(
                    f"{API}/leaderboard/update",
                    json={"user_id": user, "competition_id": "c", "steps": 37 * i},
                    headers=SERVICE_AUTH,
                )
                assert resp.status_code == 200, resp.text
                event_id = int(resp.json()["data"]["event_id"])
            else:
                await sync(a.client, user, rec("2026-11-04", 11 * i))
                # A sync's answer carries no event id: the board's version read after it
                # was acknowledged is at least the sync's.
                state = await reads.board_state(a.ctx, "c")
                assert state is not None
                event_id = state.version
            acknowledged = max(acknowledged, event_id)

        async def read(j: int) -> int:
            floor = acknowledged
            proc = b if j % 4 else a
            viewer = [*users, "org", None][j % 7]
            params: dict[str, Any] = [{}, {"limit": 2}, {"limit": 3, "offset": 1}][j % 3]
            if viewer in users and j % 5 == 0:
                params = {"around": "me", "limit": 3}
            status, body = await get(proc.client, board_url("c"), viewer, params)
            assert status == 200, body
            data = body["data"]
            assert data["event_id"] >= floor, (j, data["event_id"], floor)
            key = (viewer, repr(sorted(params.items())), data["event_id"])
            assert bodies.setdefault(key, data) == data, key
            return int(data["event_id"])

        writers = 2

        async def writer(first: int) -> None:
            nonlocal writers
            try:
                for i in range(first, first + 24, 2):
                    await write(i)
            finally:
                writers -= 1

        async def reader(j: int) -> int:
            """Reads one after another while the writes go on: each starts at another
            moment of them, and of the other readers' version checks."""
            count = 0
            while (writers and count < 200) or count == 0:
                await read(j + 100 * count)
                count += 1
            return count

        # Two writers (syncs, trusted writes) and fifty readers, all at once; the first
        # failure stops them all.
        async with asyncio.TaskGroup() as group:
            group.create_task(writer(0))
            group.create_task(writer(1))
            readers = [group.create_task(reader(j)) for j in range(50)]
        assert sum(r.result() for r in readers) > 50
        # Once quiet, both processes show the last version, as a fresh one would.
        final = await uncached(settings, board_url("c"), "org")
        assert final[1]["data"]["event_id"] == acknowledged
        for proc in (a, b):
            assert await get(proc.client, board_url("c"), "org") == final
