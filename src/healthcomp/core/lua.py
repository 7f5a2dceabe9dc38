"""Lua scripts, registered once per client and run by EVALSHA."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from hiredis import pack_command
from redis.exceptions import NoScriptError

from healthcomp.core.context import AppContext
from healthcomp.core.redis import exchange

# Lua helpers shared by scripts of several domains.
# split('a|b|c') -> {'a', 'b', 'c'}: the `|`-separated records the scripts keep.
LUA_SPLIT = """
local function split(s)
  local p = {}
  for x in string.gmatch(s, '[^|]+') do p[#p + 1] = x end
  return p
end
"""


class Lua:
    """A script kept next to the domain that owns its keys.

    Every script takes only keys of one hash tag, so it runs atomically in a cluster.
    """

    __slots__ = ("name", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source

    def registered(self, ctx: AppContext) -> Any:
        script = ctx.scripts.get(self.name)
        if script is None:
            script = ctx.scripts[self.name] = ctx.r.register_script(self.source)
        return script

    async def __call__(self, ctx: AppContext, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.registered(ctx)(keys=keys, args=args)
        except NoScriptError:
            # redis-py loaded the script and tried again, and the node still did not
            # know it. In a cluster SCRIPT LOAD goes to the primaries of the client's
            # slot map, which misses a replica promoted a moment ago (a failover): the
            # read or write was a 500. The script ran in neither try; EVAL carries its
            # source to whichever node serves the keys (and leaves it cached there).
            return await ctx.r.eval(self.source, len(keys), *keys, *args)

    async def batched(
        self, ctx: AppContext, keys: Sequence[str], args: Sequence[Any], *, wait: float = 0
    ) -> Any:
        """The same call, sent in one pipeline with the other scripts called in this turn
        of the event loop, or within `wait` seconds (`Pipeliner`): for the hot paths."""
        return await self.send(ctx, keys, args, wait=wait)

    def send(
        self, ctx: AppContext, keys: Sequence[str], args: Sequence[Any], *, wait: float = 0
    ) -> asyncio.Future[Any]:
        """`batched` without awaiting: queue several, then await each (one pipeline)."""
        return ctx.pipeliner.enqueue(self, keys, args, wait)


Call = tuple[Lua, Sequence[str], Sequence[Any]]


async def run_many(ctx: AppContext, calls: Sequence[Call]) -> list[Any]:
    """Several scripts in one pipelined round trip (not a transaction). Each reply is the
    script's answer, or the exception it raised: a caller decides per call. A script the
    server did not know yet (a restart emptied its cache) did not run: it is loaded and
    run again.

    On a cluster the calls go concurrently, one command each: redis-py replays a
    cluster pipeline on a connection error, and these scripts write (core/redis.py)."""
    if ctx.redis.mode == "cluster":
        return list(
            await asyncio.gather(
                *(lua(ctx, list(keys), list(args)) for lua, keys, args in calls),
                return_exceptions=True,
            )
        )
    replies = await _pipelined(ctx, calls)
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        for lua in {calls[i][0] for i in missing}:
            await ctx.r.script_load(lua.source)
        again = await _pipelined(ctx, [calls[i] for i in missing])
        for i, reply in zip(missing, again, strict=True):
            replies[i] = reply
    return replies


async def _pipelined(ctx: AppContext, calls: Sequence[Call]) -> list[Any]:
    packed = b"".join(
        pack_command(("EVALSHA", lua.registered(ctx).sha, len(keys), *keys, *args))
        for lua, keys, args in calls
    )
    return await exchange(ctx.r, packed, len(calls))


class Pipeliner:
    """Script calls made in the same turn of the event loop, sent as one pipeline.

    Concurrent requests each make a round trip or two; sent together they share one
    write, one read and one connection, which costs the client a fraction of separate
    round trips (on this kind of machine most of a round trip's cost is its system
    calls). A call adds one turn of the loop to its latency; work done after the answer
    (`wait` > 0) waits a little longer to share its pipeline with more. A caller
    cancelled before the pipeline leaves is dropped from it: it sends nothing.
    """

    __slots__ = ("_loop", "_queues", "ctx")

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._loop: asyncio.AbstractEventLoop | None = None
        # wait -> (calls, their futures) not sent yet
        self._queues: dict[float, tuple[list[Call], list[asyncio.Future[Any]]]] = {}

    def enqueue(
        self, lua: Lua, keys: Sequence[str], args: Sequence[Any], wait: float
    ) -> asyncio.Future[Any]:
        """Queue a call; its future holds the reply (or the exception) once sent."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        future = loop.create_future()
        queue = self._queues.get(wait)
        if queue is None:
            queue = self._queues[wait] = ([], [])
            if wait > 0:
                loop.call_later(wait, self._flush, wait)
            else:
                loop.call_soon(self._flush, wait)
        queue[0].append((lua, keys, args))
        queue[1].append(future)
        return future

    def _flush(self, wait: float) -> None:
        calls, futures = self._queues.pop(wait)
        live = [(c, f) for c, f in zip(calls, futures, strict=True) if not f.done()]
        if live:
            task = asyncio.get_running_loop().create_task(self._send(live))
            task.add_done_callback(_retrieve)

    async def _send(self, live: list[tuple[Call, asyncio.Future[Any]]]) -> None:
        try:
            replies = await run_many(self.ctx, [call for call, _ in live])
        except BaseException as exc:
            for _, future in live:
                if not future.done():
                    future.set_exception(exc)
            raise
        for (_, future), reply in zip(live, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result(reply)


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
