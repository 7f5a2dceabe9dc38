"""SPEC §2: the embedded Redis, supervised, persistent, one per data directory; and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from prometheus_client import REGISTRY

from healthcomp.core.embedded import (
    EMBEDDED_URL_ENV,
    DataDirLocked,
    EmbeddedRedis,
    free_loopback_port,
    redis_server_binary,
    start_or_share,
)
from healthcomp.core.settings import Settings
from tests.conftest import START, assert_error, auth, make_settings
from tests.core.support import running_app

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("HC_TEST_BACKEND", "embedded") != "embedded",
        reason="the embedded server is tested on the embedded backend run only",
    ),
]

ME = "/api/v1/users/me"
PROFILE = "/api/v1/users/me/profile"
SYNC = "/api/v1/fitness/sync"
HISTORY = "/api/v1/fitness/history"


# --- processes ----------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie has exited already)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def redis_servers_for(data_dir: Path) -> list[int]:
    """Pids of the redis-server processes that keep their files in `data_dir`."""
    # redis-server rewrites its title, but it runs with `--dir` as its working directory.
    wanted = str(data_dir.resolve() / "redis")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            is_redis = b"redis-server" in (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if is_redis and cwd == wanted and alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def lock_is_free(data_dir: Path) -> bool:
    with (data_dir / "redis" / "lock").open("a") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        return True


def eventually(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


_OWNER_SCRIPT = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from healthcomp.core.embedded import EmbeddedRedis\n"
    "server = EmbeddedRedis(Path(sys.argv[1]))\n"
    "print(server.start(), server.pid, flush=True)\n"
    "time.sleep(120)\n"
)


@contextmanager
def owner_process(
    data: Path, script: str = _OWNER_SCRIPT
) -> Iterator[tuple[subprocess.Popen[str], str, int]]:
    """Another service process owning `data`'s server: (process, URL, server pid)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(data)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert len(line) == 2, f"the owner process started no server (exit {proc.wait(10)})"
        yield proc, line[0], int(line[1])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def raw_reply(host: str, port: int, request: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(request)
        return conn.recv(256)


@pytest.fixture(autouse=True)
def no_inherited_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EMBEDDED_URL_ENV, raising=False)


def embedded_settings(root: Path, **overrides: Any) -> Settings:
    return make_settings(root, None, **overrides)


# --- the server in the data directory ---------------------------------------------------


async def test_starts_its_own_server_in_the_data_dir(short_dir: Path) -> None:
    settings = embedded_settings(short_dir)
    rdir = settings.data_dir / "redis"
    async with running_app(settings) as (app, client):
        ctx = app.state.ctx
        assert ctx.redis.mode == "embedded"
        assert ctx.embedded is not None
        sock = rdir / "redis.sock"
        assert ctx.redis.url == f"unix://{sock}"
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o700
        assert (rdir / "url").read_text() == ctx.redis.url
        pid = ctx.embedded.pid
        assert int((rdir / "redis.pid").read_text()) == pid
        assert redis_servers_for(settings.data_dir) == [pid]
        # No TCP listener at all, and append-only persistence on.
        assert (await ctx.r.config_get("port")) == {"port": "0"}
        assert (await ctx.r.config_get("appendonly")) == {"appendonly": "yes"}

        ready = await client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["redis"] == "embedded"
        resp = await client.put(PROFILE, headers=auth(), json={"display_name": "Persisted Name"})
        assert resp.status_code == 200, resp.text
        # appendfsync always: the AOF is written and fsynced before acknowledging.
        assert b"Persisted Name" in (rdir / "appendonly.aof").read_bytes()
        assert not lock_is_free(settings.data_dir)
    assert wait_dead(pid)
    assert not (rdir / "url").exists()
    assert lock_is_free(settings.data_dir)


async def test_long_data_dir_falls_back_to_a_loopback_port_with_a_password(
    tmp_path: Path,
) -> None:
    settings = embedded_settings(tmp_path, data_dir=tmp_path / ("d" * 110))
    async with running_app(settings) as (app, client):
        ctx = app.state.ctx
        url = urlsplit(ctx.redis.url)
        assert (url.scheme, url.hostname, url.path) == ("redis", "127.0.0.1", "/0")
        assert url.port not in (None, 0, 6379)
        assert url.password is not None and len(url.password) >= 32
        assert (await ctx.r.config_get("bind")) == {"bind": "127.0.0.1"}
        assert (await ctx.r.config_get("requirepass")) == {"requirepass": url.password}

        # The URL file holds the password: the owner's user alone may read it.
        url_file = settings.data_dir / "redis" / "url"
        assert url_file.read_text() == ctx.redis.url
        assert stat.S_IMODE(url_file.stat().st_mode) == 0o600

        # Any local user can reach a loopback port; without the password, nothing.
        assert raw_reply("127.0.0.1", url.port, b"PING\r\n").startswith(b"-NOAUTH")
        assert raw_reply("127.0.0.1", url.port, b"AUTH wrong\r\n").startswith(b"-WRONGPASS")
        anonymous = redis.Redis(host="127.0.0.1", port=url.port)
        try:
            with pytest.raises(redis.AuthenticationError):
                anonymous.get("anything")
        finally:
            anonymous.close()

        resp = await client.put(PROFILE, headers=auth(), json={"display_name": "Over TCP"})
        assert resp.status_code == 200, resp.text
        resp = await client.get(ME, headers=auth())
        assert resp.status_code == 200 and resp.json()["data"]["display_name"] == "Over TCP"
        pid = ctx.embedded.pid
    assert wait_dead(pid)


async def test_sigkill_of_the_server_recovers_by_itself(short_dir: Path) -> None:
    settings = embedded_settings(short_dir)
    restarts = REGISTRY.get_sample_value("healthcomp_embedded_redis_restarts_total") or 0
    reconnects_of = {"link": "commands"}
    reconnects = REGISTRY.get_sample_value("healthcomp_redis_reconnects_total", reconnects_of)
    unreachable_of = {"kind": "unreachable"}
    unreachable = REGISTRY.get_sample_value("healthcomp_redis_errors_total", unreachable_of)
    answered_503 = 0
    async with running_app(settings) as (app, client):
        embedded = app.state.ctx.embedded
        resp = await client.put(PROFILE, headers=auth(), json={"display_name": "Before Kill"})
        assert resp.status_code == 200, resp.text
        for kill in (1, 2):  # the restarted server is supervised as well
            old_pid = embedded.pid
            os.kill(old_pid, signal.SIGKILL)
            started = time.monotonic()
            first = await client.get(ME, headers=auth())
            first_took = time.monotonic() - started
            pid_by_then = embedded.pid
            statuses = [first.status_code]
            deadline = time.monotonic() + 15
            ready = 0
            while time.monotonic() < deadline:
                resp = await client.get(ME, headers=auth())
                statuses.append(resp.status_code)
                if resp.status_code == 503:
                    assert_error(resp, 503, "service_unavailable")
                    assert int(resp.headers["retry-after"]) > 0
                ready = (await client.get("/health/ready")).status_code
                if ready == 200 and embedded.restarts >= kill:
                    break
                await asyncio.sleep(0.05)

            # Down means 503, never a 500 or a hang. The client's short retries may
            # bridge a restart, so the first request may succeed, but only if the
            # supervisor had spawned a new server by the time it was answered.
            assert set(statuses) <= {200, 503}, statuses
            answered_503 += statuses.count(503)
            assert first.status_code == 503 or pid_by_then != old_pid, first.text
            assert first_took < 5
            assert ready == 200
            assert embedded.restarts == kill
            assert embedded.pid != old_pid
            assert not alive(old_pid)
            assert redis_servers_for(settings.data_dir) == [embedded.pid]
            resp = await client.get(ME, headers=auth())
            assert resp.status_code == 200, resp.text
            assert resp.json()["data"]["display_name"] == "Before Kill"
        new_pid = embedded.pid
    assert wait_dead(new_pid)
    # In the metrics: both restarts, the pool's connections made again, each 503.
    after = REGISTRY.get_sample_value("healthcomp_embedded_redis_restarts_total") or 0
    assert after == restarts + 2
    now = REGISTRY.get_sample_value("healthcomp_redis_reconnects_total", reconnects_of) or 0
    assert now >= (reconnects or 0) + 1
    errors = REGISTRY.get_sample_value("healthcomp_redis_errors_total", unreachable_of) or 0
    assert errors - (unreachable or 0) >= answered_503


async def test_acknowledged_syncs_survive_sigkill_of_the_server(short_dir: Path) -> None:
    """`appendfsync always` (the default): Redis writes and fsyncs the append-only file
    before it answers, so a sync answered 2xx is on disk for the restarted server,
    however many were in flight when the server was killed. The rest were answered 503.
    (`everysec` could lose writes held back while a slow fsync ran: tests/faults.)"""
    settings = embedded_settings(short_dir)
    assert settings.embedded_fsync == "always"
    day = START.date().isoformat()
    answered: dict[int, int] = {}
    async with running_app(settings) as (app, client):
        embedded = app.state.ctx.embedded
        assert (await app.state.ctx.r.config_get("appendfsync")) == {"appendfsync": "always"}
        old_pid = embedded.pid
        in_flight = 0

        async def sync(i: int) -> None:
            nonlocal in_flight
            body = {"date": day, "steps": 1000 + i, "source": "watch"}
            resp = await client.post(SYNC, headers=auth(f"u{i}"), json=body)
            answered[i] = resp.status_code
            if len(answered) == 60:
                # Killed right at the 60th answer, not when the test wakes up later:
                # on a slow disk the other 240 could all be answered by then.
                os.kill(old_pid, signal.SIGKILL)
                in_flight = 300 - len(answered)

        syncs = [asyncio.create_task(sync(i)) for i in range(300)]
        await asyncio.gather(*syncs)
        assert in_flight > 0  # killed while syncs were still being answered
        assert set(answered.values()) <= {200, 503}, answered
        acknowledged = [i for i, status in answered.items() if status == 200]
        assert len(acknowledged) >= 60
        deadline = time.monotonic() + 15
        while embedded.restarts < 1 or (await client.get("/health/ready")).status_code != 200:
            assert time.monotonic() < deadline, "the server did not come back"
            await asyncio.sleep(0.05)
        assert embedded.pid != old_pid
        for i in acknowledged:
            resp = await client.get(f"{HISTORY}/u{i}?from={day}&to={day}", headers=auth(f"u{i}"))
            assert resp.status_code == 200, resp.text
            assert resp.json()["data"]["days"][0]["steps"] == 1000 + i


async def test_a_hung_server_gives_503_then_recovers(short_dir: Path) -> None:
    settings = embedded_settings(short_dir, redis_timeout_seconds=0.3)
    async with running_app(settings) as (app, client):
        embedded = app.state.ctx.embedded
        resp = await client.put(PROFILE, headers=auth(), json={"display_name": "Before Stop"})
        assert resp.status_code == 200, resp.text
        pid = embedded.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            resp = await client.get(ME, headers=auth())
            assert_error(resp, 503, "service_unavailable")
            assert int(resp.headers["retry-after"]) > 0
            assert time.monotonic() - started < 5
            assert_error(await client.get("/health/ready"), 503, "not_ready")
            assert (await client.get("/health")).status_code == 200
        finally:
            os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if (await client.get("/health/ready")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        resp = await client.get(ME, headers=auth())
        assert resp.status_code == 200, resp.text
        assert resp.json()["data"]["display_name"] == "Before Stop"
        # Stopped is not dead: the same server carried on, no restart.
        assert embedded.pid == pid and embedded.restarts == 0


async def test_data_survives_a_service_restart(short_dir: Path) -> None:
    settings = embedded_settings(short_dir)
    async with running_app(settings, keep_keys=True) as (app, client):
        resp = await client.put(PROFILE, headers=auth("keeper"), json={"display_name": "Kept"})
        assert resp.status_code == 200, resp.text
        first_pid = app.state.ctx.embedded.pid
    assert wait_dead(first_pid)
    again = embedded_settings(short_dir, key_prefix=settings.key_prefix)
    async with running_app(again) as (app, client):
        assert app.state.ctx.embedded.pid != first_pid
        resp = await client.get(ME, headers=auth("keeper"))
        assert resp.json()["data"]["display_name"] == "Kept"


async def test_one_server_per_data_dir(short_dir: Path) -> None:
    data = short_dir / "data"
    first = EmbeddedRedis(data)
    url = first.start()
    try:
        with pytest.raises(DataDirLocked):
            EmbeddedRedis(data).start()
        assert EmbeddedRedis.url_of_running(data) == url
        assert first._ping()

        # A second service on the same directory shares the running server, on standby.
        settings = embedded_settings(short_dir)
        async with running_app(settings) as (app, client):
            ctx = app.state.ctx
            assert ctx.embedded is not None
            assert not ctx.embedded.owner and ctx.embedded.pid is None
            assert ctx.redis.mode == "embedded" and ctx.redis.url == url
            resp = await client.put(PROFILE, headers=auth(), json={"display_name": "Shared"})
            assert resp.status_code == 200, resp.text
            direct = redis.Redis.from_url(url, decode_responses=True)
            try:
                stored = direct.hget(ctx.keys.profile("alice"), "display_name")
            finally:
                direct.close()
            assert stored == "Shared"
            assert redis_servers_for(data) == [first.pid]
        # Leaving did not stop the server it borrowed.
        assert first._ping()
        assert redis_servers_for(data) == [first.pid]
    finally:
        pid = first.pid
        first.stop()
    assert pid is not None and wait_dead(pid)
    # The sharer that left stands by no more: nobody takes the directory over.
    await asyncio.sleep(0.5)
    assert EmbeddedRedis.url_of_running(data) is None
    assert redis_servers_for(data) == []
    assert lock_is_free(data)


# --- a sharer takes over --------------------------------------------------------------


async def test_a_sharing_service_takes_over_when_the_owner_is_killed(short_dir: Path) -> None:
    settings = embedded_settings(short_dir)
    data = settings.data_dir
    with owner_process(data) as (owner, url, owner_redis):
        async with running_app(settings) as (app, client):
            ctx = app.state.ctx
            standby = ctx.embedded
            assert standby is not None and not standby.owner and standby.pid is None
            assert ctx.redis.url == url
            resp = await client.put(PROFILE, headers=auth(), json={"display_name": "Survivor"})
            assert resp.status_code == 200, resp.text

            owner.kill()
            owner.wait(10)
            assert wait_dead(owner_redis)
            statuses = []
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                resp = await client.get(ME, headers=auth())
                statuses.append(resp.status_code)
                if resp.status_code == 200 and standby.owner:
                    break
                await asyncio.sleep(0.05)

            assert set(statuses) <= {200, 503}, statuses
            assert standby.owner and standby.pid is not None
            # The same URL, so the client this service already had simply reconnected.
            assert standby.url == url
            assert eventually(lambda: EmbeddedRedis.url_of_running(data) == url)
            assert redis_servers_for(data) == [standby.pid]
            assert resp.status_code == 200, resp.text
            assert resp.json()["data"]["display_name"] == "Survivor"
            assert (await client.get("/health/ready")).status_code == 200
            new_pid = standby.pid
    # Having taken over, it stops the server like any owner.
    assert wait_dead(new_pid)
    assert EmbeddedRedis.url_of_running(data) is None
    assert lock_is_free(data)


def test_a_takeover_keeps_the_loopback_port_and_password(tmp_path: Path) -> None:
    data = tmp_path / ("d" * 110)
    with owner_process(data) as (owner, url, owner_redis):
        shared_url, standby = start_or_share(data)
        try:
            assert shared_url == url and urlsplit(url).password
            before = redis.Redis.from_url(url)
            try:
                before.set("kept", "yes")
            finally:
                before.close()

            owner.kill()
            owner.wait(10)
            assert wait_dead(owner_redis)
            assert eventually(lambda: standby.owner and standby._ping())
            assert eventually(lambda: EmbeddedRedis.url_of_running(data) == url)

            assert standby.url == url
            assert redis_servers_for(data) == [standby.pid]
            after = redis.Redis.from_url(url)
            try:
                assert after.get("kept") == b"yes"
            finally:
                after.close()
            port = urlsplit(url).port
            assert port is not None
            assert raw_reply("127.0.0.1", port, b"PING\r\n").startswith(b"-NOAUTH")
        finally:
            pid = standby.pid
            standby.stop()
    assert pid is not None and wait_dead(pid)


def test_standbys_take_over_one_at_a_time(short_dir: Path) -> None:
    data = short_dir / "data"
    first = EmbeddedRedis(data)
    url = first.start()
    handles = [first]
    try:
        for _ in range(2):
            shared_url, standby = start_or_share(data)
            assert shared_url == url and not standby.owner
            handles.append(standby)
        direct = redis.Redis.from_url(url)
        try:
            direct.set("relay", "1")
        finally:
            direct.close()

        # Two hand-overs: a clean stop of the owner frees the lock as a crash does.
        waiting = handles[1:]
        for _ in range(2):
            previous = next(h for h in handles if h.owner)
            old_pid = previous.pid
            previous.stop()
            assert old_pid is not None and wait_dead(old_pid)
            # The URL file is rewritten once the new server answers.
            assert eventually(lambda: EmbeddedRedis.url_of_running(data) == url)
            assert eventually(lambda: any(h.owner and h._ping() for h in waiting))
            owners = [h for h in waiting if h.owner]
            assert len(owners) == 1
            current = owners[0]
            waiting.remove(current)
            assert all(h.pid is None for h in waiting)
            assert redis_servers_for(data) == [current.pid]
            direct = redis.Redis.from_url(url)
            try:
                assert direct.get("relay") == b"1"
            finally:
                direct.close()
    finally:
        pids = [h.pid for h in handles]
        for handle in handles:
            handle.stop()
    assert all(pid is None or wait_dead(pid) for pid in pids)
    assert lock_is_free(data)


# --- what the server is, and whom an owner may stop --------------------------------------


def _start_redis(rdir: Path, name: str) -> subprocess.Popen[bytes]:
    """A redis-server this module did not start, working in `rdir`."""
    rdir.mkdir(parents=True, exist_ok=True)
    sock = rdir / f"{name}.sock"
    options = {
        "port": "0",
        "unixsocket": str(sock),
        "dir": str(rdir),
        "pidfile": str(rdir / f"{name}.pid"),
        "save": "",
        "appendonly": "no",
        "daemonize": "no",
        "logfile": str(rdir / f"{name}.log"),
    }
    command = [str(redis_server_binary())]
    for option, value in options.items():
        command += [f"--{option}", value]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pidfile = rdir / f"{name}.pid"
    # Redis opens its socket before it writes its pid file: wait for both (reading the
    # pid file as soon as the socket appeared failed once in CI).
    started = eventually(
        lambda: sock.exists() and bool(pidfile.exists() and pidfile.read_text()), 10
    )
    assert started, "the test's redis-server did not start"
    return proc


def test_an_unrelated_redis_named_in_the_pid_file_is_left_alone(short_dir: Path) -> None:
    data = short_dir / "data"
    foreign = _start_redis(short_dir / "elsewhere", "foreign")
    try:
        # A stale pid file whose pid now belongs to someone else's redis-server.
        (data / "redis").mkdir(parents=True)
        (data / "redis" / "redis.pid").write_text(f"{foreign.pid}\n")
        server = EmbeddedRedis(data)
        server.start()
        try:
            assert alive(foreign.pid)
            assert redis_servers_for(data) == [server.pid]
        finally:
            server.stop()
        assert alive(foreign.pid)
    finally:
        foreign.terminate()
        foreign.wait(10)


def test_an_orphaned_server_in_the_data_dir_is_stopped(short_dir: Path) -> None:
    data = short_dir / "data"
    rdir = data / "redis"
    orphan = _start_redis(rdir, "redis")
    try:
        assert int((rdir / "redis.pid").read_text()) == orphan.pid
        assert redis_servers_for(data) == [orphan.pid]
        server = EmbeddedRedis(data)
        server.start()
        try:
            assert wait_dead(orphan.pid)
            assert redis_servers_for(data) == [server.pid]
        finally:
            server.stop()
    finally:
        if orphan.poll() is None:
            orphan.kill()
        orphan.wait(10)


# Any library load or symbol lookup in the forked child, before it execs redis-server,
# ends that child at once: the server never starts, and the test sees it.
_NO_DLOPEN_OWNER_SCRIPT = (
    "import os, sys, time\n"
    "from pathlib import Path\n"
    "from healthcomp.core.embedded import EmbeddedRedis\n"
    "parent = os.getpid()\n"
    "def hook(event, args):\n"
    "    if event in ('ctypes.dlopen', 'ctypes.dlsym') and os.getpid() != parent:\n"
    "        os._exit(97)\n"
    "sys.addaudithook(hook)\n"
    "server = EmbeddedRedis(Path(sys.argv[1]))\n"
    "print(server.start(), server.pid, flush=True)\n"
    "time.sleep(120)\n"
)


def test_the_forked_child_loads_no_library_yet_dies_with_its_parent(short_dir: Path) -> None:
    data = short_dir / "data"
    with owner_process(data, _NO_DLOPEN_OWNER_SCRIPT) as (owner, _url, pid):
        assert redis_servers_for(data) == [pid]
        # Its own process group: a Ctrl-C meant for the service does not reach it.
        pgrp = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
        assert pgrp == pid != os.getpgrp()
        owner.kill()
        owner.wait(10)
        # PR_SET_PDEATHSIG was set, by the function resolved before the fork.
        assert wait_dead(pid)


def test_service_killed_with_sigkill_leaves_no_server(short_dir: Path) -> None:
    data = short_dir / "data"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from healthcomp.core.embedded import EmbeddedRedis\n"
        "server = EmbeddedRedis(Path(sys.argv[1]))\n"
        "print(server.start(), server.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(data)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        url, pid = proc.stdout.readline().split()
        assert alive(int(pid))
        direct = redis.Redis.from_url(url)
        try:
            direct.set("survivor", "yes")
        finally:
            direct.close()
        proc.kill()
        proc.wait(10)
        # The server dies with its parent; the directory is free for the next start.
        assert wait_dead(int(pid))
        server = EmbeddedRedis(data)
        url = server.start()
        try:
            direct = redis.Redis.from_url(url)
            try:
                assert direct.get("survivor") == b"yes"
            finally:
                direct.close()
        finally:
            server.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# --- the CLI, end to end ------------------------------------------------------------------

_CONFIG_NAMES = (
    "PORT",
    "REDIS_URL",
    "SUPABASE_URL",
    "SUPABASE_JWT_SECRET",
    "SUPABASE_ANON_KEY",
    "ENVIRONMENT",
    "HC_DATA_DIR",
    "HC_WORKERS",
    "HC_DEMO",
    "HC_JWKS_URL",
    "HC_JWT_ALGORITHMS",
    EMBEDDED_URL_ENV,
)


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CONFIG_NAMES}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli(*args: str) -> list[str]:
    """`healthcomp ARGS`, run with this interpreter."""
    return [sys.executable, "-m", "healthcomp", *args]


class Served:
    """`healthcomp serve` in a subprocess on a free loopback port."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.data = tmp_path / "data"
        self.port = free_loopback_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "serve.log"
        self.cwd = tmp_path
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                cli("serve", "--data-dir", str(self.data), "--port", str(self.port), *extra),
                cwd=tmp_path,
                env=cli_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so a failed test can kill the workers too
            )

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"serve did not answer /health in {timeout}s:\n{self.log.read_text()}")

    def token(self, user: str) -> str:
        done = subprocess.run(
            cli("token", "--data-dir", str(self.data), "--user", user),
            cwd=self.cwd,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout.strip()

    def redis_pid(self) -> int:
        return int((self.data / "redis" / "redis.pid").read_text())

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def kill_all(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[Served] = []

    def start(*extra: str) -> Served:
        served = Served(tmp_path, *extra)
        started.append(served)
        return served

    yield start
    for served in started:
        served.kill_all()


def _streamed(size: int) -> Iterator[bytes]:
    chunk = b" " * 65536
    yield b'{"display_name": "x"'
    for _ in range(size // len(chunk) + 1):
        yield chunk
    yield b"}"


def test_cli_serve_token_and_sigterm(serve: Any) -> None:
    served: Served = serve()
    served.wait_healthy()
    redis_pid = served.redis_pid()
    assert alive(redis_pid)
    assert redis_servers_for(served.data) == [redis_pid]

    user_token = served.token("u1")
    headers = {"Authorization": f"Bearer {user_token}"}
    resp = httpx.get(f"{served.base}{ME}", headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["user_id"] == "u1"
    assert httpx.get(f"{served.base}/health/ready", timeout=10).json()["redis"] == "embedded"
    assert_error(httpx.get(f"{served.base}{ME}", timeout=10), 401, "unauthorized")
    # The body limit holds on a real socket with a chunked upload too (1 MiB default).
    resp = httpx.put(
        f"{served.base}{PROFILE}",
        headers={**headers, "content-type": "application/json"},
        content=_streamed(1024 * 1024 + 1),
        timeout=10,
    )
    assert_error(resp, 413, "payload_too_large")

    assert served.terminate() == 0
    assert wait_dead(redis_pid), "the embedded redis-server outlived the service"
    assert not (served.data / "redis" / "url").exists()
    assert lock_is_free(served.data)


def test_cli_serve_with_two_workers_shares_one_redis(serve: Any) -> None:
    served: Served = serve("--workers", "2")
    served.wait_healthy(45)
    redis_pid = served.redis_pid()
    headers = {"Authorization": f"Bearer {served.token('u2')}"}
    resp = httpx.put(
        f"{served.base}{PROFILE}", headers=headers, json={"display_name": "Two"}, timeout=10
    )
    assert resp.status_code == 200, resp.text
    for _ in range(20):  # a fresh connection each time, so either worker may answer
        resp = httpx.get(f"{served.base}{ME}", headers=headers, timeout=10)
        assert resp.status_code == 200, resp.text
        assert resp.json()["data"]["display_name"] == "Two"
    assert redis_servers_for(served.data) == [redis_pid]

    assert served.terminate() == 0
    assert wait_dead(redis_pid), "the embedded redis-server outlived the service"
