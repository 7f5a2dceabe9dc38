"""Shared reads: concurrent callers asking for the same key share one fetch, but only a
fetch that starts after they asked, so each caller sees a value at least as new as the
moment it arrived (the freshness a validated cache needs, SPEC §6.2).

Per key, at most one fetch runs and at most one waits: a caller arriving while a fetch
runs joins the next one, which starts as soon as the running one ends. A fetch starts
on the loop's next turn, so callers arriving in the same turn share it. Under load a
key costs one round trip at a time however many requests want it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Slot(Generic[V]):
    __slots__ = ("next", "running")

    def __init__(self) -> None:
        self.next: asyncio.Future[V] | None = None  # not started yet: new callers join it
        self.running = False


class SharedFetch(Generic[K, V]):
    def __init__(self, fetch: Callable[[K], Awaitable[V]]) -> None:
        self._fetch = fetch
        self._slots: dict[K, _Slot[V]] = {}

    async def get(self, key: K) -> V:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        future = slot.next
        if future is None:
            loop = asyncio.get_running_loop()
            future = slot.next = loop.create_future()
            if not slot.running:
                slot.running = True
                loop.call_soon(self._start, key, slot)
        # Shielded: one caller giving up (a deadline) must not cancel the others' fetch.
        return await asyncio.shield(future)

    def _start(self, key: K, slot: _Slot[V]) -> None:
        future, slot.next = slot.next, None
        assert future is not None and slot.running
        task = asyncio.get_running_loop().create_task(self._run(key, slot, future))
        task.add_done_callback(_quiet)

    async def _run(self, key: K, slot: _Slot[V], future: asyncio.Future[V]) -> None:
        try:
            future.set_result(await self._fetch(key))
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:  # handed to every waiter, who raise it
            future.set_exception(exc)
        finally:
            # The waiters' futures were awaited (or shielded): retrieving the exception
            # here keeps asyncio from reporting it as never retrieved.
            if future.done() and not future.cancelled():
                future.exception()
            if slot.next is not None:
                self._start(key, slot)  # the callers who came while this one ran
            else:
                slot.running = False
                if self._slots.get(key) is slot:
                    del self._slots[key]


def _quiet(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
