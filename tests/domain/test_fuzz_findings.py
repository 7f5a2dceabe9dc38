"""Regression tests for what the schema fuzz (tests/test_fuzz.py) found, on every backend."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import SERVICE_AUTH, assert_error, auth
from tests.domain.helpers import API, create_comp, disqualify, join, rec, sync


@pytest.mark.parametrize(
    ("headers", "around"),
    [(SERVICE_AUTH, "a"), (auth("org"), "a"), (auth("b"), "a"), (auth("a"), "me")],
)
async def test_a_window_around_a_disqualified_participant_whose_score_moved_is_404(
    client: httpx.AsyncClient, headers: dict[str, str], around: str
) -> None:
    """A disqualified participant's score keeps counting off the board, and a change
    drops their place on it (their entry's board member becomes `false`). A window
    `around` them then made the page script call ZRANK with `false`: a Lua error and a
    500 (found by the long fuzz: leaderboard/0?around=fz-user)."""
    await create_comp(client, "dq")
    await join(client, "dq", "a", "b")
    await sync(client, "b", rec("2026-11-05", 3000))
    await disqualify(client, "dq", "a", "test")
    await sync(client, "a", rec("2026-11-05", 5000))  # counts, off the board

    resp = await client.get(f"{API}/leaderboard/dq", params={"around": around}, headers=headers)
    assert_error(resp, 404, "participant_not_found")
    # The board itself is still there for whoever may see it.
    resp = await client.get(f"{API}/leaderboard/dq", headers=headers)
    assert resp.status_code == 200, resp.text
    assert [e["user_id"] for e in resp.json()["data"]["entries"]] == ["b"]
