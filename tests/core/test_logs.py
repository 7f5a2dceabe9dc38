"""Logs (issue 11): a request id on every response and on every line of its request, an
access line per request naming the route's template and the caller, JSON lines in
production, and never a token."""

from __future__ import annotations

import io
import logging

import httpx
import orjson
import pytest

from healthcomp.core.logs import REQUEST, JsonFormatter, TextFormatter, _RequestId
from tests.conftest import auth, token


@pytest.fixture
def lines() -> io.StringIO:
    """Every record of the service's loggers, as the production handler writes it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_RequestId())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


def _records(out: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def _access(out: io.StringIO) -> list[dict[str, object]]:
    return [r for r in _records(out) if r["logger"] == "healthcomp.access"]


async def test_a_request_id_is_made_or_taken_and_given_back(
    client: httpx.AsyncClient, lines: io.StringIO
) -> None:
    given = await client.get("/health", headers={"X-Request-ID": "abc-123.4:5_6"})
    assert given.headers["x-request-id"] == "abc-123.4:5_6"
    made = await client.get("/health")
    assert len(made.headers["x-request-id"]) == 16
    # Not a plain token (spaces, a newline, too long): replaced, never echoed.
    for bad in (b"has space", b"x" * 129, "a\u00e9".encode()):
        resp = await client.get("/health", headers={b"X-Request-ID": bad})
        assert resp.headers["x-request-id"] != bad
    ids = [r["request_id"] for r in _access(lines)]
    assert len(ids) == 5
    assert ids[0] == "abc-123.4:5_6" and ids[1] == made.headers["x-request-id"]
    assert len(set(ids)) == len(ids)


async def test_the_access_line_names_the_route_status_and_caller_not_the_token(
    client: httpx.AsyncClient, lines: io.StringIO
) -> None:
    secret = token("ana")
    await client.get("/api/v1/users/me", headers=auth("ana"))
    await client.get(f"/api/v1/competitions/nope?token={secret}", headers=auth("ana"))
    await client.get("/api/v1/leaderboard/nope", headers=auth("ana"))  # the lean path
    await client.post("/api/v1/fitness/sync", headers=auth("ana"), json={"date": "x"})
    await client.get("/api/v1/users/me")  # no token
    got = [(r["method"], r["route"], r["status"], r["user"]) for r in _access(lines)]
    assert got == [
        ("GET", "/api/v1/users/me", 200, "ana"),
        ("GET", "/api/v1/competitions/{competition_id}", 404, "ana"),
        ("GET", "/api/v1/leaderboard/{competition_id}", 404, "ana"),
        ("POST", "/api/v1/fitness/sync", 422, "ana"),
        ("GET", "/api/v1/users/me", 401, None),
    ]
    assert all(isinstance(r["duration_ms"], float) for r in _access(lines))
    ours = "\n".join(str(r) for r in _records(lines) if str(r["logger"]).startswith("healthcomp"))
    assert "healthcomp.access" in ours
    assert secret not in ours and "Bearer" not in ours


def test_lines_carry_the_request_id_in_both_formats() -> None:
    record = logging.LogRecord(
        "healthcomp.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None
    )
    reset = REQUEST.set({"id": "rid-1", "user": None})
    try:
        _RequestId().filter(record)
    finally:
        REQUEST.reset(reset)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = orjson.loads(line)
    assert parsed["message"] == "hello you" and parsed["request_id"] == "rid-1"
    assert parsed["level"] == "warning" and parsed["time"].endswith("Z")
    text = TextFormatter().format(record)
    assert "[rid-1]" in text and "hello you" in text and "WARNING" in text
