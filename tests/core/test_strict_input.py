"""SPEC §4 strict input (issue 12): a boolean is not a number, a string is not a number,
numbers beyond a field's range and text JSON cannot carry back are 422 (never a 500 from
the error handler itself), and names hold no control or bidirectional-override
characters. Every refusal stores nothing."""

from __future__ import annotations

import json

import httpx
import pytest

from healthcomp.core.auth import Principal
from tests.conftest import SERVICE_AUTH, assert_error, auth
from tests.domain.helpers import API, create_comp, join

SYNC = f"{API}/fitness/sync"
JSON = {"content-type": "application/json"}
DAY = "2026-11-05"


async def _post_raw(
    client: httpx.AsyncClient, url: str, body: bytes, user: str = "a"
) -> httpx.Response:
    return await client.post(url, content=body, headers={**auth(user), **JSON})


async def _stored_days(client: httpx.AsyncClient, user: str) -> list[object]:
    resp = await client.get(f"{API}/fitness/history/{user}?from={DAY}&to={DAY}", headers=auth(user))
    if resp.status_code == 404:  # no user record: nothing was ever stored
        return []
    assert resp.status_code == 200, resp.text
    days: list[object] = resp.json()["data"]["days"]
    return days


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("steps", b"true"),
        ("steps", b'"500"'),
        ("steps", b"5.5"),
        ("steps", b"5.0"),
        ("active_minutes", b"false"),
        ("distance", b'"12.5"'),
        ("calories", b"true"),
        ("distance", b"NaN"),
        ("distance", b"Infinity"),
        ("steps", b"18446744073709551616"),  # 2^64
        ("active_minutes", b"12345678901234567890"),
        ("steps", b"-1"),
    ],
)
async def test_a_record_number_must_be_a_json_number_in_range(
    client: httpx.AsyncClient, field: str, raw: bytes
) -> None:
    for shape in (
        b'{"date":"%s","source":"w","%s":%s}',
        b'{"records":[{"date":"%s","source":"w","%s":%s}]}',
    ):
        body = shape % (DAY.encode(), field.encode(), raw)
        resp = await _post_raw(client, SYNC, body, user="strict")
        details = assert_error(resp, 422, "validation_error")["details"]
        assert [d["field"].rsplit(".", 1)[-1] for d in details] == [field], details
    assert await _stored_days(client, "strict") == []


async def test_whole_numbers_and_floats_still_pass(client: httpx.AsyncClient) -> None:
    body = (
        b'{"date":"%s","source":"w","steps":5000,"distance":3200.5,"calories":120}' % DAY.encode()
    )
    resp = await _post_raw(client, SYNC, body, user="fine")
    assert resp.status_code == 200, resp.text
    assert len(await _stored_days(client, "fine")) == 1


@pytest.mark.parametrize(
    "body",
    [
        b'{"date":"2026-11-05","steps":1,"source":"w","extra":18446744073709551616}',
        b'{"records":[{"date":"2026-11-05","steps":1,"source":"w"}],"n":[[[-99999999999999999999]]]}',
        b'{"date":"2026-11-05","steps":1,"source":"\\ud800"}',
        b'{"date":"2026-11-05","steps":1,"source":"w","\\udfff":1}',
        b'{"date":"\\ud83d","steps":1,"source":"w"}',
    ],
)
async def test_what_json_cannot_carry_back_is_a_422_not_a_500(
    client: httpx.AsyncClient, body: bytes
) -> None:
    """A huge integer or an unpaired surrogate anywhere made the validation handler fail
    (it echoed the input back and the encoder refused it)."""
    resp = await _post_raw(client, SYNC, body, user="echo")
    payload = assert_error(resp, 422, "validation_error")
    for detail in payload["details"]:
        assert "\ud800" not in str(detail) and "\udfff" not in str(detail)
    assert await _stored_days(client, "echo") == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("entry_fee_cents", True),
        ("prize_pool_cents", "1000"),
        ("min_participants", 2.0),
        ("grace_hours", False),
        ("rake_percent", "2.5"),
        ("rake_percent", True),
        ("payout", {"scheme": "top_n", "percentages": ["60", "30", "10"]}),
        ("goal", {"daily_target": "10000", "min_days": 5}),
        ("entry_fee_cents", 2**64),
        ("max_participants", -(2**70)),
        ("name", "Tricky \u202egnp.exe"),
        ("name", "Null\x00byte"),
        ("name", "Lone \ud800 half"),
        ("description", "Isolate \u2066here\u2069"),
    ],
)
async def test_competition_fields_are_strict(
    client: httpx.AsyncClient, field: str, value: object
) -> None:
    body: dict[str, object] = {
        "name": "Strict",
        "start_date": "2026-11-10",
        "end_date": "2026-11-20",
        field: value,
    }
    if field == "goal":
        body["format"] = "goal"
    raw = json.dumps(body).encode()  # ASCII with \u escapes: carries a lone surrogate
    resp = await _post_raw(client, f"{API}/competitions", raw, user="org")
    details = assert_error(resp, 422, "validation_error")["details"]
    assert any(d["field"] and d["field"].split(".")[0] == field for d in details), details
    # Nothing was created: the organizer organizes no competition.
    listed = await client.get(f"{API}/users/org/competitions", headers=auth("org"))
    assert listed.status_code in (200, 404)
    if listed.status_code == 200:
        assert listed.json()["data"]["competitions"] == []


async def test_numbers_as_numbers_and_text_with_line_breaks_pass(client: httpx.AsyncClient) -> None:
    body = {
        "name": "Fine one",
        "description": "Line one\n\tLine two",
        "start_date": "2026-11-10",
        "end_date": "2026-11-20",
        "rake_percent": 2.5,
        "entry_fee_cents": 500,
        "payout": {"scheme": "top_n", "percentages": [70, 30]},
    }
    resp = await client.post(f"{API}/competitions", json=body, headers=auth("org"))
    assert resp.status_code == 201, resp.text
    assert resp.json()["data"]["rake_percent"] == 2.5


async def test_trusted_writes_and_patches_are_strict(client: httpx.AsyncClient) -> None:
    await create_comp(client, "tw")
    await join(client, "tw", "a")
    body = {"user_id": "a", "competition_id": "tw", "steps": "5", "distance": 0, "calories": 0}
    resp = await client.post(f"{API}/leaderboard/update", json=body, headers=SERVICE_AUTH)
    assert_error(resp, 422, "validation_error")
    resp = await client.patch(
        f"{API}/competitions/tw", json={"grace_hours": True}, headers=auth("org")
    )
    assert_error(resp, 422, "validation_error")
    resp = await client.patch(
        f"{API}/competitions/tw", json={"name": "a\u202eb"}, headers=auth("org")
    )
    assert_error(resp, 422, "validation_error")


@pytest.mark.parametrize("name", ["Right\u202eto left", "Bell\x07", "Tab\tinside", "Line\nbreak"])
async def test_display_names_refuse_unseen_characters(client: httpx.AsyncClient, name: str) -> None:
    resp = await client.put(
        f"{API}/users/me/profile", json={"display_name": name}, headers=auth("p")
    )
    assert_error(resp, 422, "validation_error")


def test_a_token_name_is_cleaned_not_refused() -> None:
    """A name from the token's metadata is not the user's input here: what a name
    refuses is dropped instead."""
    principal = Principal(role="authenticated", user_id="u1", full_name="Eve\u202e\x00 Smith\u2066")
    assert principal.default_name() == "Eve Smith"
    unnamed = Principal(role="authenticated", user_id="u2", full_name="\u202e\u2069")
    assert unnamed.default_name() == "u2"
    emailed = Principal(role="authenticated", user_id="u3", email="zo\u200fe@example.com")
    assert emailed.default_name() == "zoe"


@pytest.mark.parametrize(
    "query", ["to=0001-01-01", "from=0001-01-01&to=0001-01-20", "to=1999-12-31", "from=1999-12-31"]
)
async def test_history_days_before_2000_are_refused(client: httpx.AsyncClient, query: str) -> None:
    await _post_raw(client, SYNC, b'{"date":"%s","steps":10,"source":"w"}' % DAY.encode(), user="h")
    resp = await client.get(f"{API}/fitness/history/h?{query}", headers=auth("h"))
    body = assert_error(resp, 422, "validation_error")
    assert "2000-01-01" in body["message"]


@pytest.mark.parametrize("offset", ["+23:59", "-14:30", "+14:01", "-23:00"])
async def test_offsets_beyond_14_hours_are_refused(client: httpx.AsyncClient, offset: str) -> None:
    body = {"date": f"{DAY}T10:00:00{offset}", "steps": 10, "source": "w"}
    resp = await client.post(SYNC, json=body, headers=auth("off"))
    details = assert_error(resp, 422, "validation_error")["details"]
    assert details[0]["field"] == "date" and "14:00" in details[0]["message"]
    assert await _stored_days(client, "off") == []


@pytest.mark.parametrize("offset", ["+14:00", "-12:00", "Z", "+05:45", ""])
async def test_offsets_on_earth_take_their_local_day(
    client: httpx.AsyncClient, offset: str
) -> None:
    body = {"date": f"{DAY}T23:30:00{offset}", "steps": 10, "source": "w"}
    resp = await client.post(SYNC, json=body, headers=auth("on"))
    assert resp.status_code == 200, resp.text
    assert len(await _stored_days(client, "on")) == 1


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [("9999-12-30", "9999-12-31", "start_date"), ("2026-11-20", "3000-01-01", "end_date")],
)
async def test_competition_days_past_the_year_2999_are_refused(
    client: httpx.AsyncClient, start: str, end: str, field: str
) -> None:
    """Found by a fuzz run: the deadline of a competition ending on 9999-12-31 could
    not be computed (500)."""
    body = {"name": "Far", "start_date": start, "end_date": end}
    resp = await client.post(f"{API}/competitions", json=body, headers=SERVICE_AUTH)
    details = assert_error(resp, 422, "validation_error")["details"]
    assert details[0]["field"] == field and "2999-12-31" in details[0]["message"]
    await create_comp(client, "soon", start_date="2026-11-20", end_date="2026-11-25")
    patch = {"end_date": "9999-12-31"}
    resp = await client.patch(f"{API}/competitions/soon", json=patch, headers=auth("org"))
    assert_error(resp, 422, "validation_error")
