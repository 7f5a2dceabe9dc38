"""Fair-play decisions on the live leaderboard (SPEC §6.6, §7), against real service
processes: the review is made through one process and watched through another, as
clients behind a load balancer would."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from healthcomp.core.auth import SERVICE
from tests.conftest import token
from tests.live.support import Service, Watcher, bearer, open_competition, watch

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ENV = {"HC_WS_HEARTBEAT_SECONDS": "5", "HC_WS_UPDATE_INTERVAL_MS": "50"}


async def post(http: httpx.AsyncClient, url: str, body: Any, who: str = "org") -> Any:
    headers = bearer(None, role=SERVICE) if who == "service" else bearer(who)
    resp = await http.post(url, json=body, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


async def planted(http: httpx.AsyncClient) -> tuple[str, str, int]:
    """A running competition (yesterday to a week on) where `cheat`, who walks about
    8,000 a day, syncs 95,000 today; `a` and `b` walk 15,000 and 12,000 today. The
    competition's id, the flag's id and the cheater's score without the day."""
    cid = "r" + uuid.uuid4().hex[:10]
    await open_competition(http, cid, "org", "cheat", "a", "b")
    today = datetime.now(UTC).date()
    history = [
        {"date": (today - timedelta(days=i)).isoformat(), "steps": 8_000 + 37 * i,
         "active_minutes": 70, "source": "phone"}
        for i in range(1, 12)
    ]  # fmt: skip
    yesterday = 8_000 + 37
    await post(http, "/api/v1/fitness/sync", {"records": history}, "cheat")
    for user, steps, minutes in (("a", 15_000, 130), ("b", 12_000, 110), ("cheat", 95_000, 400)):
        day = {"date": today.isoformat(), "steps": steps, "active_minutes": minutes}
        await post(http, "/api/v1/fitness/sync", day, user)
    resp = await http.get(
        f"/api/v1/competitions/{cid}/flags", params={"state": "open"}, headers=bearer("org")
    )
    (flag,) = resp.json()["data"]["flags"]
    assert flag["user_id"] == "cheat" and flag["date"] == today.isoformat()
    return cid, flag["id"], yesterday


def after(watcher: Watcher, kind: str, event_id: int) -> list[dict[str, Any]]:
    return [f for f in watcher.of(kind) if f.get("event_id", 0) > event_id]


async def test_an_exclusion_moves_the_board_and_the_ranks_it_changed(
    pair: list[Service], http: httpx.AsyncClient
) -> None:
    cid, flag_id, rest = await planted(http)
    watchers = {u: await watch(pair[1].ws_url(cid, token=token(u))) for u in ("a", "b", "cheat")}
    for w in watchers.values():
        await w.until(lambda f: len(f) >= 2)
    start = watchers["a"].frames[0]["event_id"]
    assert watchers["a"].frames[1]["me"]["rank"] == 2

    url = f"/api/v1/competitions/{cid}/flags/{flag_id}"
    done = await post(http, url, {"action": "exclude", "reason": "95k in a day"})
    assert done["changed"] is True and done["participant"]["rank"] == 3
    for w in watchers.values():
        await w.until(lambda f, w=w: after(w, "score_update", start))
    (update,) = after(watchers["a"], "score_update", start)
    assert (update["cause"], update["user_id"], update["score"]) == ("review", "cheat", rest)
    assert (update["rank"], update["previous_rank"]) == (3, 1)
    assert update["previous_score"] == rest + 95_000 and update["event_id"] == done["event_id"]
    # Each one the exclusion moved hears it personally.
    for user, rank, previous, overtook, by in (
        ("a", 1, 2, ["cheat"], []),
        ("b", 2, 3, ["cheat"], []),
        ("cheat", 3, 1, [], ["a", "b"]),
    ):
        w = watchers[user]
        await w.until(lambda f, w=w: after(w, "rank_change", start))
        (change,) = after(w, "rank_change", start)
        assert change["user_id"] == user and change["event_id"] == done["event_id"]
        assert (change["rank"], change["previous_rank"]) == (rank, previous)
        assert (change["overtook"], change["overtaken_by"]) == (overtook, by)
    # The coalesced board follows.
    w = watchers["a"]
    await w.until(
        lambda f: any(
            x["type"] == "leaderboard_update" and x["event_id"] >= done["event_id"] for x in f
        )
    )
    board = [x for x in w.of("leaderboard_update") if x["event_id"] >= done["event_id"]][-1]
    assert [(e["user_id"], e["rank"]) for e in board["entries"]] == [
        ("a", 1), ("b", 2), ("cheat", 3),
    ]  # fmt: skip

    # Restored: a review score_update again, and the cheater back on top.
    back = await post(http, url, {"action": "restore", "reason": "checked"})
    await w.until(lambda f: after(w, "score_update", done["event_id"]))
    (update,) = after(w, "score_update", done["event_id"])
    assert (update["cause"], update["user_id"], update["rank"], update["previous_rank"]) == (
        "review", "cheat", 1, 3,
    )  # fmt: skip
    assert update["event_id"] == back["event_id"]
    await w.until(lambda f: after(w, "rank_change", done["event_id"]))
    (change,) = after(w, "rank_change", done["event_id"])
    assert (change["rank"], change["previous_rank"], change["overtaken_by"]) == (2, 1, ["cheat"])

    # Dismissed: no score moves, a flag_reviewed for the board.
    dismissed = await post(http, url, {"action": "dismiss", "reason": "wearable log ok"})
    assert dismissed["changed"] is True
    await w.until(lambda f: after(w, "flag_reviewed", back["event_id"]))
    (frame,) = after(w, "flag_reviewed", back["event_id"])
    assert (frame["competition_id"], frame["action"], frame["event_id"]) == (
        cid, "dismiss", dismissed["event_id"],
    )  # fmt: skip
    assert frame["timestamp"].endswith("Z")
    assert not after(w, "score_update", back["event_id"])
    for watcher in watchers.values():
        await watcher.close()


async def test_disqualify_and_reinstate_on_the_live_board(
    pair: list[Service], http: httpx.AsyncClient
) -> None:
    cid, _, rest = await planted(http)
    score = rest + 95_000
    w = await watch(pair[1].ws_url(cid, token=token("a")))
    await w.until(lambda f: len(f) >= 2)
    start = w.frames[0]["event_id"]
    base = f"/api/v1/competitions/{cid}/participants/cheat"

    out = await post(http, f"{base}/disqualify", {"reason": "impossible day"})
    await w.until(lambda f: after(w, "participant_disqualified", start))
    (frame,) = after(w, "participant_disqualified", start)
    assert (frame["competition_id"], frame["user_id"], frame["event_id"]) == (
        cid, "cheat", out["event_id"],
    )  # fmt: skip
    assert (frame["rank"], frame["previous_rank"], frame["previous_score"]) == (None, 1, score)
    await w.until(
        lambda f: any(
            x["type"] == "leaderboard_update" and x["event_id"] >= out["event_id"] for x in f
        )
    )
    board = [x for x in w.of("leaderboard_update") if x["event_id"] >= out["event_id"]][-1]
    assert [e["user_id"] for e in board["entries"]] == ["a", "b"]

    back = await post(http, f"{base}/reinstate", {"reason": "appeal upheld"}, "service")
    await w.until(lambda f: after(w, "score_update", out["event_id"]))
    (update,) = after(w, "score_update", out["event_id"])
    assert (update["cause"], update["user_id"], update["score"], update["rank"]) == (
        "reinstate", "cheat", score, 1,
    )  # fmt: skip
    assert update["event_id"] == back["event_id"] == out["event_id"] + 1
    await w.until(
        lambda f: any(
            x["type"] == "leaderboard_update" and x["event_id"] >= back["event_id"] for x in f
        )
    )
    board = [x for x in w.of("leaderboard_update") if x["event_id"] >= back["event_id"]][-1]
    assert [e["user_id"] for e in board["entries"]] == ["cheat", "a", "b"]
    await w.close()
