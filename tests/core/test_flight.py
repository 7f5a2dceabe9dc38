"""`SharedFetch`: concurrent callers of a key share one fetch, but only one that started
after they called, so each sees a value at least as new as its arrival (SPEC §6.2).

Per key at most one fetch runs and at most one waits; other keys are not held up; a
failure reaches every waiter and is not kept; a caller giving up cancels nothing of the
others'. Pure asyncio: the fetch below counts its calls and finishes only when the test
releases it, so every interleaving here is decided by the test, not by timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import pytest

from healthcomp.core.flight import SharedFetch

T = TypeVar("T")


class Boom(RuntimeError):
    pass


class Source:
    """A fetch per key that returns (key, n), n counting that key's fetches from 1, once
    the test releases it; it records how many ran at once and whether one was cancelled."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.gates: dict[str, list[asyncio.Event]] = {}
        self.running: dict[str, int] = {}
        self.most_running = 0
        self.cancelled = 0
        self.fail: set[tuple[str, int]] = set()  # (key, n) that raise Boom

    async def fetch(self, key: str) -> tuple[str, int]:
        n = self.calls[key] = self.calls.get(key, 0) + 1
        gate = asyncio.Event()
        self.gates.setdefault(key, []).append(gate)
        self.running[key] = self.running.get(key, 0) + 1
        self.most_running = max(self.most_running, *self.running.values())
        try:
            await gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running[key] -= 1
        if (key, n) in self.fail:
            raise Boom(f"fetch {n} of {key}")
        return key, n

    def started(self, key: str) -> int:
        return self.calls.get(key, 0)

    def release(self, key: str, n: int) -> None:
        """Lets the n-th fetch of `key` (from 1) finish."""
        self.gates[key][n - 1].set()

    def release_all(self, key: str) -> None:
        for gate in self.gates.get(key, []):
            gate.set()


async def turns(n: int = 5) -> None:
    """Lets every ready task run a few steps."""
    for _ in range(n):
        await asyncio.sleep(0)


_spawned: set[asyncio.Task[Any]] = set()


def spawn(aw: Awaitable[T]) -> asyncio.Task[T]:
    async def run() -> T:
        return await aw

    task = asyncio.create_task(run())
    _spawned.add(task)
    return task


async def result(aw: Awaitable[T]) -> T:
    """`aw`'s result; a broken implementation that never answers fails instead of hanging."""
    return await asyncio.wait_for(aw, 5)


@pytest.fixture(autouse=True)
async def no_leftovers() -> AsyncIterator[None]:
    """Tasks a failed test left waiting on a gate are cancelled, not kept on the loop."""
    yield
    for task in _spawned:
        task.cancel()
    await asyncio.gather(*_spawned, return_exceptions=True)
    _spawned.clear()


async def test_callers_arriving_while_a_fetch_runs_share_the_next_one() -> None:
    source = Source()
    flight: SharedFetch[str, tuple[str, int]] = SharedFetch(source.fetch)
    first = spawn(flight.get("a"))
    await turns()
    assert source.started("a") == 1

    later = [spawn(flight.get("a")) for _ in range(5)]
    await turns()
    # They wait for a fetch that starts after them: none has started yet.
    assert source.started("a") == 1
    assert not any(t.done() for t in later)

    source.release("a", 1)
    assert await result(first) == ("a", 1)
    await turns()
    # The running fetch is over, so theirs starts: one for the five of them.
    assert source.started("a") == 2
    assert not any(t.done() for t in later)
    source.release("a", 2)
    assert await result(asyncio.gather(*later)) == [("a", 2)] * 5
    assert source.started("a") == 2
    assert source.most_running == 1


async def test_a_burst_from_idle_costs_at_most_two_fetches() -> None:
    source = Source()
    flight: SharedFetch[str, tuple[str, int]] = SharedFetch(source.fetch)
    burst = [spawn(flight.get("a")) for _ in range(20)]
    await turns()
    assert source.started("a") == 1
    source.release("a", 1)
    await turns()
    if source.started("a") == 2:
        source.release("a", 2)
    results = await result(asyncio.gather(*burst))
    assert source.started("a") <= 2
    # The first caller started a fetch; all the others share one.
    assert len(set(results[1:])) == 1
    assert source.most_running == 1


async def test_every_caller_gets_a_fetch_that_started_after_it_called() -> None:
    """Callers arrive at every moment of the fetches' lives; each one's value comes from a
    fetch numbered above those started before it called, and never two run at once."""
    source = Source()
    flight: SharedFetch[str, tuple[str, int]] = SharedFetch(source.fetch)
    callers: list[tuple[int, asyncio.Task[tuple[str, int]]]] = []
    for round_ in range(12):
        for _ in range(round_ % 4):
            callers.append((source.started("a"), spawn(flight.get("a"))))
        await turns()
        # Release whatever runs now, every other round, so some callers wait a while.
        if round_ % 2 and source.started("a"):
            source.release("a", source.started("a"))
        await turns()
    for _ in range(10):
        if all(task.done() for _, task in callers):
            break
        source.release_all("a")
        await turns()
    for started_before, task in callers:
        _, n = task.result()
        assert n > started_before
    assert source.most_running == 1
    # Nobody waiting: nothing kept for the key.
    assert flight._slots == {}


async def test_different_keys_fetch_independently() -> None:
    source = Source()
    flight: SharedFetch[str, tuple[str, int]] = SharedFetch(source.fetch)
    a = spawn(flight.get("a"))
    await turns()
    b = spawn(flight.get("b"))
    await turns()
    # b's fetch started although a's runs, and ends without it.
    assert source.started("b") == 1
    source.release("b", 1)
    assert await result(b) == ("b", 1)
    assert not a.done()
    source.release("a", 1)
    assert await result(a) == ("a", 1)
    assert source.calls == {"a": 1, "b": 1}


async def test_a_failure_reaches_every_waiter_and_is_not_kept() -> None:
    source = Source()
    source.fail.add(("a", 2))
    flight: SharedFetch[str, tuple[str, int]] = SharedFetch(source.fetch)
    first = spawn(flight.get("a"))
    await turns()
    waiters = [spawn(flight.get("a")) for _ in range(3)]
    await turns()
    source.release("a", 1)
    assert await result(first) == ("a", 1)
    await turns()
    source.release("a", 2)
    results = await result(asyncio.gather(*waiters, return_exceptions=True))
    assert all(isinstance(r, Boom) and str(r) == "fetch 2 of a" for r in results), results
    # The next call fetches again.
    again = spawn(flight.get("a"))
    await turns()
    assert source.started("a") == 3
    source.release("a", 3)
    assert await result(again) == ("a", 3)
    assert flight._slots == {}


async def test_a_cancelled_waiter_leaves_the_others_their_result() -> None:
    source = Source()
    flight: SharedFetch[str, tuple[str, int]] = SharedFetch(source.fetch)
    first = spawn(flight.get("a"))
    await turns()
    waiters = [spawn(flight.get("a")) for _ in range(3)]
    await turns()
    # One of those waiting for the next fetch gives up (a deadline), and so does the only
    # caller of the running one.
    gone, *rest = waiters
    gone.cancel()
    first.cancel()
    await turns()
    assert gone.cancelled() and first.cancelled()
    assert source.cancelled == 0 and source.running["a"] == 1
    source.release("a", 1)
    await turns()
    assert source.started("a") == 2
    source.release("a", 2)
    assert await result(asyncio.gather(*rest)) == [("a", 2)] * 2
    assert source.cancelled == 0


async def test_the_last_waiter_giving_up_does_not_cancel_the_fetch() -> None:
    source = Source()
    flight: SharedFetch[str, tuple[str, int]] = SharedFetch(source.fetch)
    lone = spawn(flight.get("a"))
    await turns()
    lone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await lone
    assert source.cancelled == 0 and source.running["a"] == 1
    # A caller arriving now waits for a fetch after the one still running.
    late = spawn(flight.get("a"))
    await turns()
    source.release("a", 1)
    await turns()
    assert source.started("a") == 2
    source.release("a", 2)
    assert await result(late) == ("a", 2)
    assert source.cancelled == 0
    assert flight._slots == {}
