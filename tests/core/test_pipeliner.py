"""`Lua.batched` / `Lua.send` (core/lua.py `Pipeliner`) on a real Redis.

Script calls made in one turn of the event loop (or within `wait`) go out together, and
each caller still gets exactly its own reply, or its own error: a script failing in one
call fails that caller only. A script the server does not know (a restart, `SCRIPT FLUSH`)
is loaded and run again, and only the calls that did not run are run again. A caller
cancelled before its pipeline leaves sends nothing.

On a standalone server a pipeline is one `exchange` (hiredis-packed EVALSHAs on one pooled
connection); the tests that count exchanges wrap the real function to record what it
sends, and are skipped on a cluster, where the calls go one by one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.exceptions import ResponseError

from healthcomp.core import lua as lua_module
from healthcomp.core import redis as redis_module
from healthcomp.core.context import AppContext
from healthcomp.core.lua import Lua


def fresh(name: str, body: str) -> Lua:
    """A script no server has seen yet (a unique comment makes a unique SHA)."""
    return Lua(f"test.pipeliner.{name}.{uuid.uuid4().hex}", f"-- {uuid.uuid4()}\n{body}")


ECHO_BODY = "return {KEYS[1], ARGV[1]}"
INCR_BODY = "return redis.call('INCR', KEYS[1])"
ECHO = Lua("test.pipeliner.echo", ECHO_BODY)
INCR = Lua("test.pipeliner.incr", INCR_BODY)
REFUSE = Lua("test.pipeliner.refuse", "return redis.error_reply('refused ' .. ARGV[1])")
RAISE = Lua("test.pipeliner.raise", "error('raised ' .. ARGV[1])")


def key(ctx: AppContext, name: str) -> str:
    """A test key under the app's prefix (the fixtures delete them)."""
    return f"{ctx.settings.key_prefix}:pipeliner:{name}"


def tag() -> str:
    return uuid.uuid4().hex


@dataclass
class Exchanges:
    """What `exchange` was asked to send, in order: (packed commands, replies)."""

    sent: list[tuple[bytes, int]] = field(default_factory=list)

    def holding(self, *marks: str) -> list[tuple[bytes, int]]:
        """The exchanges that carry any of `marks` (unique arguments of the calls)."""
        return [s for s in self.sent if any(m.encode() in s[0] for m in marks)]

    def index_of(self, mark: str) -> int:
        found = [i for i, (packed, _) in enumerate(self.sent) if mark.encode() in packed]
        assert len(found) == 1, f"{mark} went out {len(found)} times"
        return found[0]


@pytest.fixture
def standalone(ctx: AppContext) -> None:
    if ctx.redis.mode == "cluster":
        pytest.skip("on a cluster run_many sends the calls one by one, with no exchange")


@pytest.fixture
def exchanges(monkeypatch: pytest.MonkeyPatch, standalone: None) -> Exchanges:
    """Records every `exchange` (instrumentation: the real one still does the work)."""
    record = Exchanges()
    real = redis_module.exchange

    async def counting(client: Any, packed: bytes, replies: int) -> list[Any]:
        record.sent.append((packed, replies))
        return await real(client, packed, replies)

    monkeypatch.setattr(lua_module, "exchange", counting)
    return record


async def gather(*calls: Awaitable[Any]) -> list[Any]:
    """`asyncio.gather`, typed as the list it returns."""
    return list(await asyncio.gather(*calls))


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def echoes(ctx: AppContext, marks: Sequence[str]) -> list[Any]:
    return [[key(ctx, m), m] for m in marks]


# --- one turn, one pipeline ----------------------------------------------------------------


async def test_each_caller_gets_its_own_reply(ctx: AppContext) -> None:
    marks = [tag() for _ in range(50)]
    replies = await asyncio.gather(*(ECHO.batched(ctx, [key(ctx, m)], [m]) for m in marks))
    assert replies == echoes(ctx, marks)
    # Queued with send, awaited later, in any order.
    futures = [ECHO.send(ctx, [key(ctx, m)], [m]) for m in marks]
    assert [await f for f in reversed(futures)] == list(reversed(echoes(ctx, marks)))


async def test_calls_made_in_one_turn_share_one_exchange(
    ctx: AppContext, exchanges: Exchanges
) -> None:
    marks = [tag() for _ in range(300)]
    replies = await asyncio.gather(*(ECHO.batched(ctx, [key(ctx, m)], [m]) for m in marks))
    assert replies == echoes(ctx, marks)
    carrying = exchanges.holding(*marks)
    assert len(carrying) == 1
    assert carrying[0][1] == len(marks)
    assert all(m.encode() in carrying[0][0] for m in marks)
    # Calls made in later turns go in later pipelines.
    first, second = tag(), tag()
    assert await ECHO.batched(ctx, [key(ctx, first)], [first]) == [key(ctx, first), first]
    assert await ECHO.batched(ctx, [key(ctx, second)], [second]) == [key(ctx, second), second]
    assert exchanges.index_of(first) < exchanges.index_of(second)


async def test_a_failing_call_fails_only_its_caller(ctx: AppContext) -> None:
    hashed = key(ctx, "a-hash")
    await ctx.r.hset(hashed, "f", "v")
    before, refused, wrong, raised, after = (tag() for _ in range(5))
    results = await asyncio.gather(
        ECHO.batched(ctx, [key(ctx, before)], [before]),
        REFUSE.batched(ctx, [key(ctx, refused)], [refused]),
        INCR.batched(ctx, [hashed], [wrong]),
        RAISE.batched(ctx, [key(ctx, raised)], [raised]),
        ECHO.batched(ctx, [key(ctx, after)], [after]),
        return_exceptions=True,
    )
    assert results[0] == [key(ctx, before), before]
    assert isinstance(results[1], ResponseError) and f"refused {refused}" in str(results[1])
    assert isinstance(results[2], ResponseError) and "WRONGTYPE" in str(results[2])
    assert isinstance(results[3], ResponseError) and f"raised {raised}" in str(results[3])
    assert results[4] == [key(ctx, after), after]
    # Nothing was left unread on the connection: the next calls get their own replies.
    marks = [tag() for _ in range(20)]
    replies = await asyncio.gather(*(ECHO.batched(ctx, [key(ctx, m)], [m]) for m in marks))
    assert replies == echoes(ctx, marks)
    assert await ctx.r.hgetall(hashed) == {"f": "v"}


async def test_errors_and_replies_share_one_exchange(ctx: AppContext, exchanges: Exchanges) -> None:
    good, bad = tag(), tag()
    results = await asyncio.gather(
        REFUSE.batched(ctx, [key(ctx, bad)], [bad]),
        ECHO.batched(ctx, [key(ctx, good)], [good]),
        return_exceptions=True,
    )
    assert isinstance(results[0], ResponseError)
    assert results[1] == [key(ctx, good), good]
    assert len(exchanges.holding(good, bad)) == 1


# --- scripts the server does not know ------------------------------------------------------


async def test_unknown_scripts_are_loaded_and_only_they_run_again(ctx: AppContext) -> None:
    """In one pipeline: a write whose script the server knows, and two scripts it does not
    (one of them a write). Each write happens exactly once."""
    known, unknown_write, unknown_echo = (
        fresh("incr", INCR_BODY),
        fresh("incr", INCR_BODY),
        fresh("echo", ECHO_BODY),
    )
    await ctx.r.script_load(known.source)
    once, also_once, mark = key(ctx, "once"), key(ctx, "also-once"), tag()
    results = await gather(
        known.batched(ctx, [once], []),
        unknown_write.batched(ctx, [also_once], []),
        unknown_echo.batched(ctx, [key(ctx, mark)], [mark]),
    )
    assert results == [1, 1, [key(ctx, mark), mark]]
    assert await ctx.r.get(once) == "1"
    assert await ctx.r.get(also_once) == "1"


async def test_unknown_scripts_cost_one_more_exchange(
    ctx: AppContext, exchanges: Exchanges
) -> None:
    known, unknown = fresh("echo", ECHO_BODY), fresh("echo", ECHO_BODY)
    await ctx.r.script_load(known.source)
    a, b = tag(), tag()
    results = await gather(
        known.batched(ctx, [key(ctx, a)], [a]), unknown.batched(ctx, [key(ctx, b)], [b])
    )
    assert results == [[key(ctx, a), a], [key(ctx, b), b]]
    # The first pipeline carried both; the second only the one that had not run.
    assert [(a.encode() in p, b.encode() in p) for p, _ in exchanges.holding(a, b)] == [
        (True, True),
        (False, True),
    ]


async def test_batched_calls_survive_a_script_flush(ctx: AppContext) -> None:
    counter = key(ctx, "counter")
    assert await INCR.batched(ctx, [counter], []) == 1
    await ctx.r.script_flush()
    marks = [tag() for _ in range(5)]
    results = await asyncio.gather(
        INCR.batched(ctx, [counter], []),
        *(ECHO.batched(ctx, [key(ctx, m)], [m]) for m in marks),
    )
    assert results == [2, *echoes(ctx, marks)]
    assert await ctx.r.get(counter) == "2"


async def test_a_script_the_node_still_lacks_after_loading_runs_by_its_source(
    ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failover case: the load reaches other nodes than the one serving the keys
    (a replica promoted a moment ago), so EVALSHA is refused twice. The script runs
    once, by EVAL, and is cached on that node after."""
    script = fresh("unloaded", INCR_BODY)
    counter = key(ctx, "unloaded")
    sha = script.registered(ctx).sha

    async def loaded_elsewhere(source: str) -> str:
        return sha  # what SCRIPT LOAD answers, from nodes other than this one

    monkeypatch.setattr(ctx.r, "script_load", loaded_elsewhere)
    assert await script(ctx, [counter], []) == 1
    assert await ctx.r.get(counter) == "1"
    monkeypatch.undo()
    assert await script(ctx, [counter], []) == 2  # by EVALSHA now


# --- cancelled callers -----------------------------------------------------------------------


async def test_a_caller_cancelled_before_the_flush_sends_nothing(ctx: AppContext) -> None:
    untouched, mark = key(ctx, "untouched"), tag()
    doomed = asyncio.create_task(INCR.batched(ctx, [untouched], []))
    await asyncio.sleep(0)  # it has queued its call; the pipeline leaves next turn
    assert not doomed.done()
    doomed.cancel()
    # Another call of the same turn still goes, and gets its reply.
    assert await ECHO.batched(ctx, [key(ctx, mark)], [mark]) == [key(ctx, mark), mark]
    with pytest.raises(asyncio.CancelledError):
        await doomed
    await turns()
    assert await ctx.r.get(untouched) is None
    # A future dropped from `send` sends nothing either.
    dropped = INCR.send(ctx, [untouched], [])
    dropped.cancel()
    await turns()
    assert await ctx.r.get(untouched) is None


async def test_a_turn_of_cancelled_callers_sends_no_pipeline(
    ctx: AppContext, exchanges: Exchanges
) -> None:
    untouched, kept = key(ctx, "untouched"), tag()
    doomed = [asyncio.create_task(INCR.batched(ctx, [untouched], [])) for _ in range(3)]
    await asyncio.sleep(0)
    for task in doomed:
        task.cancel()
    await asyncio.gather(*doomed, return_exceptions=True)
    await turns()
    assert await ctx.r.get(untouched) is None
    assert not exchanges.holding(untouched)
    # The pipeliner still works afterwards.
    assert await ECHO.batched(ctx, [key(ctx, kept)], [kept]) == [key(ctx, kept), kept]


# --- waiting to share ------------------------------------------------------------------------


async def test_wait_groups_the_calls_made_within_it(ctx: AppContext) -> None:
    counter, a, b, now = key(ctx, "waited"), tag(), tag(), tag()
    first = INCR.send(ctx, [counter], [a], wait=0.2)
    await turns()
    second = ECHO.send(ctx, [key(ctx, b)], [b], wait=0.2)
    immediate = ECHO.send(ctx, [key(ctx, now)], [now])
    assert await immediate == [key(ctx, now), now]
    assert await first == 1
    assert await second == [key(ctx, b), b]
    assert await ctx.r.get(counter) == "1"


async def test_wait_shares_one_exchange(ctx: AppContext, exchanges: Exchanges) -> None:
    a, b, now = tag(), tag(), tag()
    first = ECHO.send(ctx, [key(ctx, a)], [a], wait=0.2)
    await turns()
    second = ECHO.send(ctx, [key(ctx, b)], [b], wait=0.2)
    immediate = ECHO.send(ctx, [key(ctx, now)], [now])
    assert await gather(first, second, immediate) == echoes(ctx, [a, b, now])
    # The call without a wait left on its own, first; the waited two left together.
    assert exchanges.index_of(now) < exchanges.index_of(a) == exchanges.index_of(b)
    assert len(exchanges.holding(a, b, now)) == 2
