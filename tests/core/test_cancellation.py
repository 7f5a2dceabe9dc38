"""A task cancelled while it awaits a Redis command stops, and the client stays usable:
no reply left for the next command, no connection lost from the pool.

Request deadlines (`core.middleware.Deadline`, which cancels an overdue request's task)
and shutdown rely on
this. With a socket timeout (ours always has one; redis-py 8 sets one by default) redis-py
writes a command under `asyncio.wait_for`, which on Python 3.11 drops a cancel that lands
as the write completes: without the re-raise in `core.redis` the task goes on running,
with redis-py 7.4 and 8.x alike. The small pool catches redis-py 7.4's cluster node losing
a connection whose command was cancelled before it was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection

from healthcomp.core.redis import RedisClient, create_client
from healthcomp.core.settings import Settings

ROUNDS = 50
# Seconds before the cancel: at once, within the first command, and a few commands in.
DELAYS = (0.0, 0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.008, 0.013, 0.021)
# How long a cancelled task may take to finish.
GRACE = 1.0


class Busy:
    """Runs commands back to back on our own keys until cancelled, or until `stop`, which
    ends a task that swallowed its cancellation before the test's client is closed."""

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self.client = client
        self.key = f"{prefix}:cancel:counter"
        self.stopped = False

    async def run(self) -> None:
        client: Any = self.client
        while not self.stopped:
            await client.incr(self.key)
            await client.get(self.key)
            await client.ping()

    async def stop(self, tasks: set[asyncio.Task[None]]) -> None:
        self.stopped = True
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)


@pytest.fixture
async def redis(redis_url: str, settings: Settings) -> AsyncIterator[RedisClient]:
    # Two connections (per node): a connection lost to a cancel shows within a few rounds.
    small = settings.model_copy(update={"redis_max_connections": 2})
    client = create_client(redis_url, small)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            keys = [k async for k in client.scan_iter(match=f"{settings.key_prefix}:cancel:*")]
            for key in keys:
                await client.delete(key)
        await client.aclose()


async def _replies_in_order(client: RedisClient, prefix: str, tag: str) -> None:
    """A connection left with an unread reply would hand it to the next command."""
    r: Any = client
    key = f"{prefix}:cancel:check"
    await r.set(key, tag)
    assert await r.get(key) == tag
    assert await r.ping() is True


async def test_a_task_cancelled_mid_command_stops(redis: RedisClient, settings: Settings) -> None:
    busy = Busy(redis, settings.key_prefix)
    stuck: set[asyncio.Task[None]] = set()
    try:
        for i, delay in zip(range(ROUNDS), itertools.cycle(DELAYS), strict=False):
            task = asyncio.create_task(busy.run())
            await asyncio.sleep(delay)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=GRACE)
            if not done:
                stuck.add(task)
            assert done, f"round {i}: still running {GRACE} s after cancel (delay {delay})"
            assert task.cancelled(), f"round {i}: ended with {task.exception()!r}"
            await _replies_in_order(redis, settings.key_prefix, f"round-{i}")
    finally:
        await busy.stop(stuck)


async def test_a_deadline_interrupts_commands(redis: RedisClient, settings: Settings) -> None:
    """As `Deadline` bounds a request: `asyncio.timeout` around a run of commands."""
    busy = Busy(redis, settings.key_prefix)
    stuck: set[asyncio.Task[None]] = set()

    async def bounded(seconds: float) -> None:
        async with asyncio.timeout(seconds):
            await busy.run()

    try:
        for i, delay in zip(range(ROUNDS), itertools.cycle(DELAYS), strict=False):
            task = asyncio.create_task(bounded(delay))
            done, _ = await asyncio.wait([task], timeout=delay + GRACE)
            if not done:
                stuck.add(task)
            assert done, f"round {i}: still running {GRACE} s past its {delay} s deadline"
            assert not task.cancelled(), f"round {i}: cancelled, not timed out"
            assert isinstance(task.exception(), TimeoutError), f"round {i}: {task!r}"
            await _replies_in_order(redis, settings.key_prefix, f"deadline-{i}")
    finally:
        await busy.stop(stuck)


async def test_a_cancel_dropped_by_the_write_is_raised_again(
    redis: RedisClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race behind the flaky stops above, made certain: the cancel arrives as the
    write completes. On Python 3.11, asyncio.wait_for (which redis-py writes under when a
    socket timeout is set) then returns normally; our connection raises it again."""
    r: Any = redis
    key = f"{settings.key_prefix}:cancel:written"
    # A pooled connection to the key's node (a cluster has three), so that only the INCR
    # is written below.
    assert await r.get(key) is None
    target: list[asyncio.Task[None]] = []
    finished: list[bool] = []
    write = AbstractConnection._send_packed_command

    async def write_then_cancel(self: AbstractConnection, command: Any) -> None:
        await write(self, command)
        target[0].cancel()

    async def incr() -> None:
        await r.incr(key)
        finished.append(True)

    monkeypatch.setattr(AbstractConnection, "_send_packed_command", write_then_cancel)
    try:
        task = asyncio.create_task(incr())
        target.append(task)
        done, _ = await asyncio.wait([task], timeout=GRACE)
    finally:
        monkeypatch.undo()
    assert done and task.cancelled(), task
    assert not finished
    # The INCR went out and ran once; its reply was not left for the next command.
    await _replies_in_order(redis, settings.key_prefix, "after-dropped-cancel")
    assert await r.get(key) == "1"
