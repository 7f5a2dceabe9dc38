"""The JWT matrix on the wire (issue 12, SPEC §3 and §7): a real `healthcomp serve`
process, configured as a Supabase project (`SUPABASE_URL`, so the issuer is checked and
the ES256/RS256 keys come from its JWKS, served here on loopback, beside the HS256
secret), refuses every forged or stale token on the live leaderboard's WebSocket: the
handshake is accepted only to say why (one `error` frame, nothing else), then closed
with 1008, whether the token came as `?token=` or in `Sec-WebSocket-Protocol`.

tests/test_hostile_tokens.py runs the same attacks in process, through the same
endpoint, on every Redis backend; this file proves the wire (uvicorn's handshake, the
subprotocol header, the close code a client sees). It starts a server process, so it
runs on the embedded backend only: the refusals are decided before Redis is asked
anything, so the other backends would prove nothing more for their cost in CI time.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import BACKEND
from tests.core.test_auth import JWKSServer
from tests.live.support import Service
from tests.test_hostile_tokens import (
    ATTACKER_SET,
    ATTACKS,
    MEMBER,
    VALID,
    Project,
    served_project,
)


@pytest.fixture(scope="module")
def project() -> Iterator[tuple[Project, JWKSServer]]:
    with served_project() as made:
        yield made


pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        BACKEND != "embedded", reason="starts a server; the in-process matrix covers backends"
    ),
]

CID = "wire-board"


@pytest.fixture(scope="module")
def service(
    project: tuple[Project, JWKSServer],
    redis_url: str,
    prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
    _drop_keys: None,
) -> Iterator[Service]:
    p, _ = project
    started = Service(
        redis_url,
        prefix,
        tmp_path_factory.mktemp("wire"),
        SUPABASE_URL=p.base,
        HC_JWKS_MIN_REFETCH_SECONDS="60",
    )
    try:
        started.wait_ready()
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
async def board(service: Service, project: tuple[Project, JWKSServer]) -> AsyncIterator[str]:
    """A public board MEMBER organizes and is on: any token let through would connect."""
    headers = {"Authorization": f"Bearer {VALID['HS256 user'](project[0])}"}
    today = datetime.now(UTC).date()
    body = {
        "id": CID,
        "name": "On the wire",
        "metric": "steps",
        "start_date": (today - timedelta(days=1)).isoformat(),
        "end_date": (today + timedelta(days=7)).isoformat(),
        "visibility": "public",
    }
    async with httpx.AsyncClient(base_url=service.base, timeout=10) as http:
        resp = await http.post("/api/v1/competitions", json=body, headers=headers)
        assert resp.status_code == 201, resp.text
        resp = await http.post(f"/api/v1/competitions/{CID}/join", headers=headers)
        assert resp.status_code == 200, resp.text
    yield CID


async def _session(url: str, **kw: Any) -> tuple[str | None, list[dict[str, Any]], int | None]:
    """Connect and read: (the accepted subprotocol, the frames, the close code). An open
    connection is left after its first two frames (close code None)."""
    frames: list[dict[str, Any]] = []
    async with connect(url, open_timeout=5, close_timeout=2, **kw) as ws:
        try:
            while len(frames) < 2:
                frames.append(orjson.loads(await ws.recv()))
        except ConnectionClosed:
            return ws.subprotocol, frames, ws.close_code
    return ws.subprotocol, frames, None


def _url(service: Service, cid: str, jwt_token: str | None = None) -> str:
    return service.ws_url(cid, **({"token": jwt_token} if jwt_token else {}))


@pytest.mark.parametrize("transport", ["query", "subprotocol"])
async def test_every_forged_token_closes_with_1008_before_any_data(
    service: Service, board: str, project: tuple[Project, JWKSServer], transport: str
) -> None:
    p, server = project
    started = time.monotonic()
    wrong: list[str] = []
    for name, make in ATTACKS.items():
        forged = make(p)
        if transport == "query":
            accepted, frames, code = await _session(_url(service, board, forged))
        else:
            accepted, frames, code = await _session(
                _url(service, board),
                subprotocols=["bearer", forged],  # type: ignore[list-item]
            )
        errors = [(f.get("type"), f.get("error"), f.get("code")) for f in frames]
        if code != 1008 or errors != [("error", "unauthorized", 401)]:
            wrong.append(f"{name}: close {code}, frames {[f.get('type') for f in frames]}")
        elif transport == "subprotocol" and accepted != "bearer":
            wrong.append(f"{name}: the refusal did not accept the offered subprotocol")
    assert wrong == [], "\n".join(wrong)
    assert ATTACKER_SET not in server.hits
    # Refusals are cheap: well under a second each on a loaded machine.
    assert time.monotonic() - started < len(ATTACKS) * 1.0


@pytest.mark.parametrize("transport", ["query", "subprotocol"])
async def test_valid_tokens_connect(
    service: Service, board: str, project: tuple[Project, JWKSServer], transport: str
) -> None:
    """The control: the same endpoint and transports let each kind of valid token in."""
    for name, make in VALID.items():
        good = make(project[0])
        if transport == "query":
            _, frames, code = await _session(_url(service, board, good))
        else:
            accepted, frames, code = await _session(
                _url(service, board),
                subprotocols=["bearer", good],  # type: ignore[list-item]
            )
            assert accepted == "bearer", name
        assert code is None, (name, frames)
        assert [f["type"] for f in frames] == ["connected", "leaderboard_update"], (name, frames)
        assert frames[1]["total_count"] == 1 and frames[1]["entries"][0]["user_id"] == MEMBER
