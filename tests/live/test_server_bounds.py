"""SPEC §3-§4 at the socket: bounded request heads, header and keep-alive timeouts, and
the client's address behind trusted proxies, on real `healthcomp serve` processes.

Run on the embedded backend's pass only: what is tested is the HTTP server in front of
the app (uvicorn_server.HttpProtocol, core.proxies), which no Redis backend changes.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import httpx
import orjson
import psutil
import pytest

from tests.conftest import BACKEND
from tests.live.support import Service, bearer

pytestmark = pytest.mark.skipif(
    BACKEND != "embedded", reason="the HTTP server's bounds do not depend on the Redis backend"
)

# The peer 127.0.0.2 is a trusted proxy; 127.0.0.1 (every other test's peer) is not.
PROXY = "127.0.0.2"
ENV = {
    "HC_HEADER_TIMEOUT": "1",
    "HC_KEEP_ALIVE": "1",
    "HC_REQUEST_TIMEOUT": "2",
    "HC_RATE_LIMIT_IP": "4",
    "HC_TRUSTED_PROXIES": f"{PROXY}/32",
}
ME = "/api/v1/users/me"


def _connect(service: Service, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(
        ("127.0.0.1", service.port), timeout=10, source_address=(source, 0)
    )
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def _read_response(sock: socket.socket) -> bytes:
    """One response of a keep-alive connection: its head and its `content-length` body."""
    out = b""
    while b"\r\n\r\n" not in out:
        out += sock.recv(65536)
    head, _, body = out.partition(b"\r\n\r\n")
    length = int(
        next(
            line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        ).split(b":")[1]
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _status_and_body(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), orjson.loads(body)


def _request(path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: test"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_head_over_the_bound_is_431_before_the_app(pair: list[Service]) -> None:
    with _connect(pair[0]) as sock:
        sock.sendall(_request("/health", {"X-Padding": "a" * 40_000}))
        status, body = _status_and_body(_read_all(sock))
    assert status == 431
    assert body["error"] == "headers_too_large" and body["code"] == 431
    # Just under the bound is served, and a 17 KiB token reaches the token check (401
    # naming its own bound), so the two limits do not overlap.
    with _connect(pair[0]) as sock:
        sock.sendall(_request("/health", {"X-Padding": "a" * 30_000, "Connection": "close"}))
        assert _status_and_body(_read_all(sock))[0] == 200
    resp = httpx.get(pair[0].base + ME, headers={"Authorization": "Bearer " + "a" * 17_000})
    assert resp.status_code == 401 and "16 KiB" in resp.json()["message"]


def test_a_streamed_26_mb_header_is_cut_off_early_and_costs_no_memory(
    pair: list[Service],
) -> None:
    worker = psutil.Process(pair[0].proc.pid)
    before = worker.memory_info().rss
    with _connect(pair[0]) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer ")
        sent = 0
        chunk = b"a" * (1 << 20)
        try:
            while sent < 26 << 20:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        # The server answered and closed long before the 26 MB were sent.
        assert sent < 8 << 20, sent
        with pytest.raises(OSError):
            for _ in range(30):
                sock.sendall(chunk)
    # Meanwhile and after, /health answers at once, and the worker did not grow.
    started = time.monotonic()
    assert httpx.get(pair[0].base + "/health").status_code == 200
    assert time.monotonic() - started < 0.5
    assert worker.memory_info().rss - before < 20 << 20


def test_a_large_body_is_not_taken_for_a_large_head(pair: list[Service]) -> None:
    # One write: the head's read also carries 200 KB of body, which must not count.
    body = orjson.dumps({"display_name": "Ann", "padding": "x" * 200_000})
    head = (
        f"PUT /api/v1/users/me/profile HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Authorization: {bearer('ann')['Authorization']}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with _connect(pair[0]) as sock:
        sock.sendall(head + body)
        status, answer = _status_and_body(_read_all(sock))
    assert status == 422, answer  # the unknown field, judged by the app
    assert answer["error"] == "validation_error"


def test_a_slow_head_is_408_and_an_idle_connection_is_closed(pair: list[Service]) -> None:
    # Dripping a byte every 0.2 s does not keep the connection: the head's time counts
    # from its first byte, not from the last.
    with _connect(pair[0]) as sock:
        started = time.monotonic()
        try:
            for byte in b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 40:
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, body = _status_and_body(_read_all(sock))
        took = time.monotonic() - started
    assert status == 408 and body["error"] == "request_timeout"
    assert 0.9 < took < 2.5, took
    # A connection that never sends a byte is closed too.
    with _connect(pair[0]) as sock:
        started = time.monotonic()
        assert _status_and_body(_read_all(sock))[0] == 408
        assert time.monotonic() - started < 2.5


def test_a_slow_body_is_408_not_a_datastore_503(pair: list[Service]) -> None:
    body = orjson.dumps({"records": [{"date": "2026-11-05", "steps": 10, "source": "w"}]})
    head = (
        f"POST /api/v1/fitness/sync HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Authorization: {bearer('ann')['Authorization']}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with _connect(pair[0]) as sock:
        sock.sendall(head + body[:5])
        started = time.monotonic()
        try:
            for byte in body[5:]:
                time.sleep(0.25)
                sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, answer = _status_and_body(_read_all(sock))
        took = time.monotonic() - started
    assert status == 408 and answer["error"] == "request_timeout", answer
    assert "body" in str(answer["message"])
    assert 1.8 < took < 4, took


def test_keep_alive_connections_are_closed_when_idle(pair: list[Service]) -> None:
    with _connect(pair[0]) as sock:
        sock.sendall(_request("/health"))
        assert _read_response(sock).startswith(b"HTTP/1.1 200")
        # A second request on the same connection is served (keep-alive works) ...
        sock.sendall(_request("/health"))
        assert _read_response(sock).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        # ... and then, idle, the connection is closed after HC_KEEP_ALIVE (1 s).
        assert sock.recv(65536) == b""
        assert 0.5 < time.monotonic() - started < 3


def _refused_until_limited(service: Service, source: str, forwarded: list[str]) -> list[int]:
    """Statuses of bad-token requests, one per `X-Forwarded-For` value, from `source`."""
    statuses = []
    for value in forwarded:
        with _connect(service, source) as sock:
            headers = {"Authorization": "Bearer bad.token", "Connection": "close"}
            if value:
                headers["X-Forwarded-For"] = value
            sock.sendall(_request(ME, headers))
            statuses.append(_status_and_body(_read_all(sock))[0])
    return statuses


def test_x_forwarded_for_is_ignored_from_an_untrusted_peer(pair: list[Service]) -> None:
    # From loopback (which uvicorn's own proxy handling would trust), made-up addresses
    # do not buy fresh budgets: the peer's one bucket of 4 (an earlier test of this
    # module may have spent from it).
    forged = [f"198.51.100.{n}" for n in range(8)]
    statuses = _refused_until_limited(pair[0], "127.0.0.1", forged)
    assert statuses.count(401) <= 4
    assert statuses[-4:] == [429] * 4


def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(pair: list[Service]) -> None:
    # Through the trusted proxy, each client has its own budget ...
    first = _refused_until_limited(pair[0], PROXY, ["203.0.113.7"] * 5)
    assert first == [401] * 4 + [429]
    other = _refused_until_limited(pair[0], PROXY, ["203.0.113.8"])
    assert other == [401]
    # ... what the client itself wrote to the left of the proxy's entry is not believed
    # (the rightmost address that is not a trusted proxy is the client) ...
    spoofed = _refused_until_limited(pair[0], PROXY, ["10.9.9.9, 203.0.113.7"])
    assert spoofed == [429]
    # ... and the budget is shared by every process: the other one refuses it too.
    assert _refused_until_limited(pair[1], PROXY, ["203.0.113.7"]) == [429]


# --- the same bounds on Granian (HC_SERVER=granian) ------------------------------------
# Granian parses HTTP in Rust (hyper), so our protocol class is not in front of it;
# `cli._granian` configures hyper's own bounds from the same settings. Its answers
# differ in form (a slow head is closed without a 408; an oversized head is a 431 with
# no body; the keep-alive idle limit is the head's time limit), not in what is bounded.


@pytest.fixture(scope="module")
def granian(
    redis_url: str, prefix: str, tmp_path_factory: pytest.TempPathFactory, _drop_keys: None
) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("granian")
    service = Service(redis_url, prefix, workdir, server="granian", **ENV)
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()


def test_granian_closes_a_silent_connection_and_a_slow_head(granian: Service) -> None:
    # Never a byte: closed after HC_HEADER_TIMEOUT (1 s). With Granian's protocol
    # detection ("auto", its default) this connection was held for ever.
    with _connect(granian) as sock:
        started = time.monotonic()
        assert _read_all(sock) == b""
        assert 0.5 < time.monotonic() - started < 2.5
    # A head dripped a byte every 0.2 s: closed too, counted from the connection.
    with _connect(granian) as sock:
        started = time.monotonic()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for byte in b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 40:
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
        with contextlib.suppress(ConnectionResetError):
            _read_all(sock)
        assert time.monotonic() - started < 2.5


def test_granian_bounds_the_head_and_closes_idle_keep_alive(granian: Service) -> None:
    # HC_MAX_HEADER_BYTES (32 KiB) is its read buffer: a head near it is served, one
    # of a few times it is 431 before the app sees it.
    with _connect(granian) as sock:
        sock.sendall(_request("/health", {"X-Padding": "a" * 30_000, "Connection": "close"}))
        assert _read_all(sock).startswith(b"HTTP/1.1 200")
    with _connect(granian) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(_request("/health", {"X-Padding": "a" * 100_000}))
        assert _read_all(sock).startswith(b"HTTP/1.1 431")
    # Keep-alive works, and an idle connection is closed after the head's time limit.
    with _connect(granian) as sock:
        for _ in range(2):
            sock.sendall(_request("/health"))
            assert _read_response(sock).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(65536) == b""
        assert 0.5 < time.monotonic() - started < 2.5
