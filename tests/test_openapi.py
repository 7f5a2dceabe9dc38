"""Every response of a realistic session matches what /openapi.json declares for it.

This is what a schema-driven client or fuzzer relies on (SPEC §4): the success shapes,
and the error envelope on every error status.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import jsonschema
import pytest

from tests.conftest import SERVICE_AUTH, auth

API = "/api/v1"


class Checker:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.routes = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), ops)
            for path, ops in spec["paths"].items()
        ]
        self.checked = 0

    def check(self, resp: httpx.Response) -> None:
        path, method = resp.request.url.path, resp.request.method.lower()
        ops = next((o for regex, o in self.routes if regex.match(path) and method in o), None)
        if ops is None:
            # Unknown paths and methods: the declared error envelope.
            schema: dict[str, Any] = {"$ref": "#/components/schemas/Error"}
        else:
            responses = ops[method]["responses"]
            declared = responses.get(str(resp.status_code)) or responses["default"]
            content = declared.get("content", {}).get("application/json")
            if content is None:
                assert resp.status_code >= 400 or not resp.content
                schema = {"$ref": "#/components/schemas/Error"}
            else:
                schema = content["schema"]
        document = {**schema, "components": self.spec["components"]}
        jsonschema.validate(resp.json(), document)
        self.checked += 1


@pytest.fixture
async def checker(client: httpx.AsyncClient) -> Checker:
    spec = (await client.get("/openapi.json")).json()
    return Checker(spec)


async def test_a_whole_session_matches_the_schema(
    client: httpx.AsyncClient, checker: Checker
) -> None:
    calls: list[tuple[str, str, dict[str, str], Any]] = [
        ("GET", "/health", {}, None),
        ("GET", "/health/ready", {}, None),
        ("GET", f"{API}/users/me", auth("org", name="Org"), None),
        ("PUT", f"{API}/users/me/profile", auth("org"), {"display_name": "Organizer"}),
        (
            "POST",
            f"{API}/competitions",
            auth("org"),
            {
                "id": "c1",
                "name": "Steps",
                "start_date": "2026-11-04",
                "end_date": "2026-11-30",
                "entry_fee_cents": 250,
                "rake_percent": 2.5,
                "max_participants": 10,
            },
        ),
        (
            "POST",
            f"{API}/competitions",
            SERVICE_AUTH,
            {
                "id": "g1",
                "name": "Goal",
                "format": "goal",
                "goal": {"daily_target": 5000, "min_days": 2},
                "payout": {"scheme": "qualifiers_split"},
                "start_date": "2026-11-20",
                "end_date": "2026-11-30",
            },
        ),
        ("GET", f"{API}/competitions?limit=5", auth("a"), None),
        ("GET", f"{API}/competitions?status=active", auth("a"), None),
        ("GET", f"{API}/competitions/c1", auth("a"), None),
        ("PATCH", f"{API}/competitions/c1", auth("org"), {"description": "Walk more"}),
        ("POST", f"{API}/competitions/c1/join", auth("a"), None),
        ("POST", f"{API}/competitions/c1/join", auth("b"), None),
        ("POST", f"{API}/competitions/c1/join", SERVICE_AUTH, {"user_id": "c"}),
        (
            "POST",
            f"{API}/fitness/sync",
            auth("a"),
            {
                "user_id": "a",
                "competition_id": "c1",
                "date": "2026-11-05T08:00:00Z",
                "steps": 5000,
                "distance": 3900.5,
                "calories": 200.2,
            },
        ),
        (
            "POST",
            f"{API}/fitness/sync",
            auth("b"),
            {"records": [{"date": "2026-11-05", "steps": 7000, "source": "watch"}]},
        ),
        ("GET", f"{API}/leaderboard/c1", auth("a"), None),
        ("GET", f"{API}/leaderboard/c1?around=me&limit=1", auth("b"), None),
        ("GET", f"{API}/competitions/c1/participants", auth("a"), None),
        (
            "POST",
            f"{API}/leaderboard/update",
            auth("org"),
            {"user_id": "c", "competition_id": "c1", "steps": 100, "distance": 0, "calories": 0},
        ),
        ("GET", f"{API}/fitness/stats/a", auth("a"), None),
        ("GET", f"{API}/fitness/stats/a?competition_id=c1", auth("b"), None),
        ("GET", f"{API}/fitness/history/a?from=2026-11-01&to=2026-11-10", auth("a"), None),
        ("GET", f"{API}/users/a/competitions", auth("a"), None),
        ("POST", f"{API}/competitions/c1/leave", auth("b"), None),
        ("POST", f"{API}/competitions/g1/cancel", SERVICE_AUTH, {"reason": "test"}),
        # Unhappy paths: each must be the declared envelope.
        ("GET", f"{API}/users/me", {}, None),
        ("GET", f"{API}/competitions/nope", auth("a"), None),
        ("POST", f"{API}/competitions/c1/join", auth("a"), None),
        ("PATCH", f"{API}/competitions/c1", auth("a"), {"name": "x"}),
        ("POST", f"{API}/fitness/sync", auth("a"), {"date": "2026-11-05", "steps": -1}),
        ("GET", f"{API}/fitness/stats/b", auth("a"), None),
        ("GET", f"{API}/leaderboard/c1?limit=0", auth("a"), None),
        ("DELETE", f"{API}/competitions/c1", auth("a"), None),
        ("GET", "/nope", {}, None),
    ]
    statuses = set()
    for method, url, headers, body in calls:
        resp = await client.request(method, url, headers=headers, json=body)
        assert resp.status_code < 500, (method, url, resp.text)
        checker.check(resp)
        statuses.add(resp.status_code)
    assert checker.checked == len(calls)
    # The session reached the success and the error paths it set out to.
    assert {200, 201, 401, 403, 404, 405, 409, 422} <= statuses


async def test_the_checker_can_fail(client: httpx.AsyncClient, checker: Checker) -> None:
    resp = await client.get(f"{API}/users/me", headers=auth("z"))
    resp._content = resp.content.replace(b'"display_name"', b'"displayName"')
    with pytest.raises(jsonschema.ValidationError):
        checker.check(resp)
